"""The OpenAI-compatible HTTP API over cbx: `/v1/audio/speech`, `/v1/models`,
`/v1/audio/voices`, `/health`.

A request is checked here (the OpenAI fields: input, model, voice, response_format,
speed, stream_format), queued for the one worker thread (worker.py), and answered once
its first event arrives: an error before any audio is a real HTTP error in OpenAI's
shape (errors.py); audio is streamed as it is made. A client that goes away, while
waiting or while listening, cancels its job.

`Guard`, in front of every route: the Host check against DNS rebinding (a page on
another site that resolves its own name to 127.0.0.1 sends that name in Host), no
browser request from another site unless its origin is allowed (CBX_SERVER_CORS), the
API key when one is set, and the body cap.
"""
from __future__ import annotations

import asyncio
import base64
import hmac
import ipaddress
import json
import logging
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response, StreamingResponse

from .. import errors as cbxerrors
from . import encoding
from .config import (BUILTIN_NAMES, MAX_INPUT_CHARS, MAX_JSON_BYTES, OPENAI_MODELS,
                     OPENAI_VOICES, ServerConfig, is_loopback)
from .errors import body as error_body, describe, unexpected
from .worker import Job, SpeechWorker

log = logging.getLogger("cbx.server")

DISCONNECT_POLL = 0.1       # seconds between checks that a waiting client is still there
OWN_FETCH_SITES = ("same-origin", "none")
DRAIN_BYTES = 64 * 2**20    # an oversized body is read this far before the 413


# --------------------------------------------------------------------------- guard

def _json(status: int, payload: dict, headers: dict | None = None):
    return JSONResponse(payload, status_code=status, headers=headers)


class Guard:
    """ASGI middleware: Host, Origin, API key and body size, before any route runs.
    The body is read here (at most the route's cap) and handed on whole."""

    def __init__(self, app, config: ServerConfig):
        from ..voices import MAX_VOICE_BYTES

        self.app, self.config = app, config
        self.upload_cap = MAX_VOICE_BYTES + MAX_JSON_BYTES    # the clip and the form

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is None:
            body, refusal = await self._read_body(scope, receive, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _refusal(self, scope, headers: dict):
        host = headers.get("host", "")
        if not self.host_allowed(host):
            log.warning("refused a request for Host %r (not this machine's name)", host)
            return _json(403, error_body(
                f"This server answers requests addressed to {self.config.host}, not "
                f"{host!r}. Fix: call it at {self.config.base_url}; to use another name "
                f"for this machine, list it in CBX_SERVER_HOSTS.",
                "permission_error", "foreign_host"))
        origin = self.foreign_origin(headers)
        if origin is not None:
            return _json(403, error_body(
                f"Requests from web pages on other sites are refused ({origin}). Fix: to "
                f"let a web app call this server from the browser, start it with "
                f"CBX_SERVER_CORS set to that app's origin.", "permission_error",
                "foreign_origin"))
        key = self.config.api_key
        if key is not None:
            given = headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                    token.strip().encode(), key.encode()):
                return _json(401, error_body(
                    "Missing or wrong API key." + (" " if given else " No Authorization "
                                                   "header was sent. ")
                    + "Fix: send 'Authorization: Bearer <CBX_API_KEY>' (the OpenAI "
                      "client's api_key) with the key the server was started with.",
                    "authentication_error", "invalid_api_key"))
        return None

    def host_allowed(self, host: str) -> bool:
        """Loopback names and addresses, names listed in CBX_SERVER_HOSTS, and, when the
        server listens beyond loopback (a key is then required), any IP address: a
        rebinding page can only send a DNS name."""
        try:
            name = urlsplit(f"//{host}").hostname or ""
        except ValueError:
            return False
        if is_loopback(name) or name in self.config.extra_hosts:
            return True
        if self.config.loopback:
            return False
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return name == self.config.host.lower()
        return True

    def foreign_origin(self, headers: dict) -> str | None:
        """What marks a browser request from another site (None: not one, or an origin
        CBX_SERVER_CORS allows). Programs send neither header."""
        origin = headers.get("origin")
        if origin is not None and origin in self.config.cors_origins:
            return None
        site = headers.get("sec-fetch-site")
        if site is not None and site.strip().lower() not in OWN_FETCH_SITES:
            return f"Sec-Fetch-Site: {site}"
        if origin is not None:
            host = headers.get("host", "")
            if urlsplit(origin).netloc.lower() != host.lower():
                return f"Origin: {origin}"
        return None

    async def _read_body(self, scope, receive, headers: dict):
        """The whole body, or a 413 once it passes the route's cap. An oversized body
        is read on to its end (up to DRAIN_BYTES) and dropped, so the client, still
        sending, gets the 413 rather than a reset connection."""
        cap = self.upload_cap if scope["path"] == "/v1/audio/voices" else MAX_JSON_BYTES
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            size += len(message.get("body", b""))
            if size <= cap:
                chunks.append(message.get("body", b""))
            if not message.get("more_body") or size > DRAIN_BYTES:
                break
        if size > cap:
            return b"", self._too_large(cap)
        return b"".join(chunks), None

    @staticmethod
    def _too_large(cap: int):
        return _json(413, error_body(
            f"The request body is over this endpoint's limit of {cap / 2**20:g} MiB. "
            f"Fix: send at most {MAX_INPUT_CHARS} characters of input per request "
            f"(split longer text), and voice clips under the clip limit.",
            "invalid_request_error", "request_too_large"))


# --------------------------------------------------------------------------- speech

def _number(name: str, value, low: float, high: float, why: str) -> float:
    from .. import options

    try:
        return options.number(name, value, low, high)
    except cbxerrors.InvalidSetting as exc:
        raise cbxerrors.InvalidSetting(exc.message, f"{exc.solution} {why}") from None


def parse_speech(data, config: ServerConfig) -> dict:
    """The checked request: everything that needs no model, so a typo is answered at
    once and never waits in the queue. cbx's own settings (seed, exaggeration, ...)
    are checked by cbx.speak as every caller's are."""
    from .. import text as textmod
    from ..settings import ALL_SETTINGS, SPEECH_RATE
    from ..voices import get_voice

    if not isinstance(data, dict):
        raise cbxerrors.InvalidSetting("The request body is not a JSON object.",
                                       'Send JSON such as {"model": "tts-1", "voice": '
                                       '"alloy", "input": "Hello."}.')
    text = data.get("input")
    if isinstance(text, str) and len(text) > MAX_INPUT_CHARS:
        raise cbxerrors.InvalidText(
            f"The input is {len(text)} characters; this server takes at most "
            f"{MAX_INPUT_CHARS} per request.",
            "Split the text and send the parts one after another (or use a cbx "
            "project for a book).")
    text = textmod.validate_text(text)
    variant = config.variant_for(data.get("model"))
    fmt = encoding.check_format(data.get("response_format", "mp3"))
    stream_format = data.get("stream_format")
    if stream_format not in (None, "audio", "sse"):
        raise cbxerrors.InvalidSetting(f"stream_format={stream_format!r} is not known.",
                                       "Use 'audio' or 'sse', or leave it out.")
    rate = _number("speed", data.get("speed", 1.0), SPEECH_RATE.low, SPEECH_RATE.high,
                   "(OpenAI allows 0.25-4; cbx changes the speech rate from "
                   f"{SPEECH_RATE.low:g} to {SPEECH_RATE.high:g} at the same pitch.)")
    voice = resolve_voice(data.get("voice"), config, variant, get_voice)
    options = {name: data[name] for name in (*ALL_SETTINGS, "seed", "language")
               if data.get(name) is not None}
    return {"text": text, "voice": voice, "format": fmt, "stream_format": stream_format,
            "options": {**options, "variant": variant, "rate": rate}}


def voice_names() -> list[str]:
    """Every name a request's `voice` may be: saved voices, the built-in one, OpenAI's."""
    from ..voices import list_voices

    return [v.name for v in list_voices()] + list(BUILTIN_NAMES) + list(OPENAI_VOICES)


def resolve_voice(voice, config: ServerConfig, variant: str, get_voice):
    """A request's voice as cbx.speak takes it: a saved voice's name, or None for the
    built-in one (OpenAI's names mean their configured saved voice, else the built-in
    one); `voice_file_not_found` (404) lists what there is."""
    if isinstance(voice, dict):         # OpenAI's newer {"id": "..."} form
        voice = voice.get("id")
    if voice is None or voice in BUILTIN_NAMES:
        return None
    if voice in OPENAI_VOICES:
        voice = config.voice_map.get(voice)
        if voice is None:
            return None
    if not isinstance(voice, str):
        raise cbxerrors.InvalidSetting(f"voice={voice!r} is not a voice name.",
                                       "Give a voice's name as text (GET /v1/audio/voices "
                                       "lists them).")
    try:
        return get_voice(voice, variant=variant).name
    except cbxerrors.VoiceFileNotFound:
        raise cbxerrors.VoiceFileNotFound(
            f"There is no voice named {voice!r}.",
            f"Use one of: {', '.join(voice_names())}; or upload a clip with POST "
            f"/v1/audio/voices.") from None


class _Events:
    """A job's events, from the worker thread into the request's event loop."""

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()

    def emit(self, kind: str, value) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))

    async def next(self, request, job: Job) -> tuple[str, object] | None:
        """The next event; None once the client has gone away (its job cancelled)."""
        while True:
            try:
                return await asyncio.wait_for(self.queue.get(), DISCONNECT_POLL)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    job.cancel.cancel()
                    return None


def _sse(payload: dict) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _error_response(error: cbxerrors.CbxError):
    status, payload, headers = describe(error)
    return _json(status, payload, headers)


# --------------------------------------------------------------------------- app

def create_app(config: ServerConfig, worker: SpeechWorker | None = None):
    """The FastAPI application; the worker starts with it and stops (freeing the model)
    when it shuts down."""
    import contextlib

    worker = worker or SpeechWorker(config.queue_size, config.device)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        worker.start(f"cbx server, port {config.port}")
        try:
            yield
        finally:
            await asyncio.to_thread(worker.stop)

    app = FastAPI(title="cbx speech server", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.worker = worker

    @app.exception_handler(cbxerrors.CbxError)
    async def cbx_error(_request, exc: cbxerrors.CbxError):
        return _error_response(exc)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return _json(exc.status_code, error_body(
            f"{request.method} {request.url.path}: {exc.detail}. Fix: this server has "
            "/v1/audio/speech, /v1/models, /v1/audio/voices and /health.",
            "invalid_request_error", "not_found" if exc.status_code == 404
            else "invalid_request"))

    @app.exception_handler(Exception)
    async def bug(_request, exc: Exception):
        return _error_response(unexpected(exc))

    async def json_body(request: Request):
        try:
            return json.loads(await request.body())
        except ValueError as exc:
            raise cbxerrors.InvalidSetting(f"The request body is not valid JSON ({exc}).",
                                           "Send a JSON object with Content-Type: "
                                           "application/json.") from None

    @app.post("/v1/audio/speech")
    async def speech(request: Request):
        call = parse_speech(await json_body(request), config)
        events = _Events()
        fmt, streamed = call["format"], call["stream_format"] is not None
        job = Job(text=call["text"], voice=call["voice"], options=call["options"],
                  make_encoder=lambda rate: encoding.encoder(fmt, rate, streamed),
                  emit=events.emit)
        worker.submit(job)
        first = await events.next(request, job)
        if first is None:                   # the client is gone: nobody to answer
            return Response(status_code=499)
        if first[0] == "error":
            return _error_response(first[1])
        if call["stream_format"] == "sse":
            return StreamingResponse(_sse_stream(first, events, job, request),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-store"})
        if encoding.sends_whole(fmt, streamed):
            data = bytearray()
            while first is not None and first[0] == "data":
                data += first[1]
                first = await events.next(request, job)
            if first is None:
                return Response(status_code=499)
            if first[0] == "error":
                return _error_response(first[1])
            return Response(bytes(data), media_type=fmt.mime)
        return StreamingResponse(_audio_stream(first, events, job, request),
                                 media_type=fmt.mime)

    async def _audio_stream(first, events: _Events, job: Job, request):
        event = first
        try:
            while event is not None and event[0] == "data":
                yield event[1]
                event = await events.next(request, job)
            if event is not None and event[0] == "error":
                # the status line is sent: cutting the stream is what tells the client
                log.error("speech failed after its audio began: %s", event[1])
                raise RuntimeError(f"speech failed after the audio began: {event[1]}")
        finally:
            job.cancel.cancel()             # a no-op once it has finished

    async def _sse_stream(first, events: _Events, job: Job, request):
        event = first
        try:
            while event is not None:
                kind, value = event
                if kind == "data":
                    yield _sse({"type": "speech.audio.delta",
                                "audio": base64.b64encode(value).decode("ascii")})
                elif kind == "done":
                    yield _sse({"type": "speech.audio.done", "seconds":
                                round(value.duration, 3), "seed": value.seed})
                    return
                else:
                    status, payload, _headers = describe(value)
                    yield _sse({"type": "error", "status": status, **payload})
                    return
                event = await events.next(request, job)
        finally:
            job.cancel.cancel()

    @app.get("/v1/models")
    async def models():
        from ..variants import VARIANTS

        data = [{"id": name, "object": "model", "owned_by": "cbx",
                 "description": spec.label} for name, spec in VARIANTS.items()]
        data += [{"id": name, "object": "model", "owned_by": "cbx",
                  "description": f"alias of {config.default_variant}",
                  "cbx_variant": config.default_variant} for name in OPENAI_MODELS]
        return {"object": "list", "data": data}

    @app.get("/v1/audio/voices")
    async def voices():
        from ..voices import list_voices

        saved = await asyncio.to_thread(list_voices)
        return {"voices": [_voice_json(v) for v in saved], "builtin": BUILTIN_NAMES[0],
                "aliases": {name: config.voice_map.get(name, BUILTIN_NAMES[0])
                            for name in OPENAI_VOICES}}

    @app.post("/v1/audio/voices")
    async def add_voice(request: Request):
        import cbx

        form = await request.form()
        upload, name = form.get("file"), form.get("name")
        if upload is None or isinstance(upload, str):
            raise cbxerrors.InvalidVoiceFile(
                "No clip was sent.", "Send a multipart form with the audio file as 'file' "
                "(and its voice name as 'name').")
        data = await upload.read()
        voice = await asyncio.to_thread(cbx.voice, data, name or upload.filename)
        return _voice_json(voice)

    @app.get("/health")
    async def health(quick: bool = False):
        """The status report and the queue; `?quick=1`: the queue and the model's
        state only (no library or weight checks), for polling."""
        import cbx

        if quick:
            return {"server": worker.state()}
        report = await asyncio.to_thread(cbx.status)
        return {"ok": report.ok, "server": worker.state(), "report": report.to_dict(),
                "problems": [p.to_dict() for p in report.problems()]}

    app.add_middleware(Guard, config=config)
    if config.cors_origins:     # outermost: a browser's preflight carries no key
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    return app


def _voice_json(voice) -> dict:
    return {"name": voice.name, "seconds": voice.duration,
            "sample_rate": voice.sample_rate, "channels": voice.channels,
            "created": voice.created, "notes": list(voice.notes)}
