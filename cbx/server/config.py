"""The speech server's settings: address, API key, aliases for OpenAI's model and voice
names, caps, CORS. Read once from the command line and environment variables, each
checked here, so a typo stops the server at start with a message instead of
surfacing as odd answers later.

Why a key is required off loopback: the server speaks in the user's cloned voices and
spends their GPU; on 127.0.0.1 only programs on this machine reach it (and the Host
and Origin checks in app.py keep web pages out), anywhere else any machine on the
network could.

Standard library only (the command checks these before anything heavy is imported).
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from ..errors import InvalidSetting
from ..variants import VARIANTS

API_KEY_ENV = "CBX_API_KEY"
MODEL_ENV = "CBX_SERVER_MODEL"          # the variant OpenAI's model names stand for
VOICES_ENV = "CBX_SERVER_VOICES"        # "alloy=alice,nova=bob": OpenAI voice -> saved voice
HOSTS_ENV = "CBX_SERVER_HOSTS"          # more Host names to answer (e.g. mybox.local)
CORS_ENV = "CBX_SERVER_CORS"            # web origins allowed to call it from a browser
QUEUE_ENV = "CBX_SERVER_QUEUE"          # requests that may wait for the model

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8880
DEFAULT_QUEUE = 16
MAX_INPUT_CHARS = 4096                  # OpenAI's own cap on `input`
MAX_JSON_BYTES = 1024 * 1024            # a speech request is a few KiB at most
OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx",
                 "sage", "shimmer", "verse", "marin", "cedar")
BUILTIN_NAMES = ("built-in", "default")   # the model's own voice
LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    device: str = "auto"
    api_key: str | None = None
    default_variant: str = "original"
    voice_map: dict = field(default_factory=dict)     # OpenAI voice name -> saved voice
    extra_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    queue_size: int = DEFAULT_QUEUE

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def variant_for(self, model) -> str:
        """The cbx variant a request's `model` names: a variant, or one of OpenAI's
        names (the configured default)."""
        if model is None or model in OPENAI_MODELS:
            return self.default_variant
        if isinstance(model, str) and model in VARIANTS:
            return model
        raise InvalidSetting(f"model={model!r} is not a model this server has.",
                             f"Use one of: {', '.join((*VARIANTS, *OPENAI_MODELS))} (the "
                             f"OpenAI names mean {self.default_variant}; GET /v1/models "
                             "lists them).")


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _names(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _voice_map(raw: str) -> dict:
    mapping = {}
    for pair in _names(raw):
        name, sep, voice = pair.partition("=")
        if not sep or name.strip() not in OPENAI_VOICES or not voice.strip():
            raise InvalidSetting(
                f"{VOICES_ENV} has {pair!r}, which is not OPENAI_VOICE=saved_voice.",
                f"Write pairs such as {VOICES_ENV}=alloy=alice,nova=bob; the OpenAI "
                f"voices are {', '.join(OPENAI_VOICES)}.")
        mapping[name.strip()] = voice.strip()
    return mapping


def _queue_size(raw: str) -> int:
    if not raw:
        return DEFAULT_QUEUE
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 1000:
        raise InvalidSetting(f"{QUEUE_ENV}={raw!r} is not a queue length.",
                             f"Set {QUEUE_ENV} to a whole number from 1 to 1000 (default "
                             f"{DEFAULT_QUEUE}), or unset it.")
    return int(raw)


def load_config(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                device: str = "auto", environ=None) -> ServerConfig:
    """The server's settings from its arguments and the environment; `invalid_setting`
    for a bad value, and for an address other machines can reach without CBX_API_KEY."""
    from .. import options

    env = os.environ if environ is None else environ
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidSetting(f"Port {port!r} is not a port number.",
                             f"Give a whole number from 1 to 65535 (default {DEFAULT_PORT}).")
    key = env.get(API_KEY_ENV, "").strip() or None
    if not is_loopback(host) and key is None:
        raise InvalidSetting(
            f"The server would listen on {host}, where other machines can reach it, "
            f"and {API_KEY_ENV} is not set, so anyone on the network could use your "
            f"voices and your GPU.",
            f"Set {API_KEY_ENV} to a long random secret (clients send it as "
            f"'Authorization: Bearer <key>', the OpenAI client's api_key), or listen on "
            f"{DEFAULT_HOST} (the default).")
    model = env.get(MODEL_ENV, "").strip() or "original"
    if model not in VARIANTS:
        raise InvalidSetting(f"{MODEL_ENV}={model!r} is not a model variant.",
                             f"Set it to one of: {', '.join(VARIANTS)}.")
    return ServerConfig(host=host, port=port, device=options.device(device), api_key=key,
                        default_variant=model, voice_map=_voice_map(env.get(VOICES_ENV, "")),
                        extra_hosts=tuple(h.lower() for h in _names(env.get(HOSTS_ENV, ""))),
                        cors_origins=_names(env.get(CORS_ENV, "")),
                        queue_size=_queue_size(env.get(QUEUE_ENV, "").strip()))
