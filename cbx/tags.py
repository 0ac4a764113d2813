"""Chatterbox-Turbo's paralinguistic tags (`[laugh]`, `[cough]`, ...): which there are,
and how to find them in a text.

Why read the list instead of writing it down: the tags are tokens Turbo's tokenizer
was given on top of GPT-2's vocabulary, so the tokenizer files in `model_cache/turbo/`
are the authority, and a newer Turbo may add some. Before those files are downloaded,
the installed chatterbox-tts package's own description (the tags it names) is used.
The other variants have no such tokens: they read a tag's letters aloud.

Layer 1: standard library only (the dashboard uses it before any model exists).
"""
from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

from . import paths

TURBO = "turbo"
# What a tag looks like: a bracketed lower-case word or words ("[clear throat]"). The
# splitter keeps every such group whole, whatever the variant, and the dashboard warns
# about them for variants that would read them aloud.
TAG_PATTERN = re.compile(r"\[[a-z][a-z _-]{0,30}\]")
# The tokenizer files that can declare added tokens (Hugging Face's layouts).
_TOKENIZER_FILES = ("tokenizer.json", "added_tokens.json", "tokenizer_config.json")
_MAX_TOKENIZER_BYTES = 64 * 1024 * 1024
_DISTRIBUTION = "chatterbox-tts"


def find_tags(text: str) -> list[str]:
    """The tag-shaped groups in `text`, in order, repeats included."""
    return TAG_PATTERN.findall(text)


def _is_tag(token: str) -> bool:
    return TAG_PATTERN.fullmatch(token) is not None


def _added_tokens(folder: Path) -> list[str]:
    """Every added token declared by the tokenizer files in `folder` (none readable: [])."""
    tokens: list[str] = []
    for name in _TOKENIZER_FILES:
        path = folder / name
        try:
            if not path.is_file() or path.stat().st_size > _MAX_TOKENIZER_BYTES:
                continue
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue     # a damaged file is reported by the health panel, not here
        if not isinstance(data, dict):
            continue
        if name == "tokenizer.json":
            tokens += [t.get("content", "") for t in data.get("added_tokens") or []
                       if isinstance(t, dict)]
        elif name == "added_tokens.json":
            tokens += list(data)
        else:
            decoder = data.get("added_tokens_decoder") or {}
            tokens += [t.get("content", "") for t in decoder.values() if isinstance(t, dict)]
    return [t for t in tokens if isinstance(t, str)]


def _package_description_tags() -> list[str]:
    """The tags the installed chatterbox-tts names in its description (its README)."""
    try:
        description = metadata.metadata(_DISTRIBUTION).get_payload() or ""
    except metadata.PackageNotFoundError:
        return []
    return re.findall(r"`(\[[a-z][a-z _-]{0,30}\])`", description)


def turbo_tags(model_dir=None) -> tuple[str, ...]:
    """Turbo's tags, sorted: from its tokenizer's added tokens in the model cache, else
    from the installed chatterbox-tts package's description; () if neither names any."""
    found = [t for t in _added_tokens(paths.variant_dir(TURBO, model_dir)) if _is_tag(t)]
    if not found:
        found = _package_description_tags()
    return tuple(sorted(set(found)))


# Turbo's tags that make a sound. Its others ([angry], [whispering], [narration], ...)
# set how the words around them are delivered; the tag bar shows the two apart.
SOUND_TAGS = frozenset({"[laugh]", "[chuckle]", "[gasp]", "[cough]", "[sigh]", "[groan]",
                        "[sniff]", "[shush]", "[clear throat]"})


def tag_groups(found) -> list[list]:
    """`found` as the tag bar groups them: [["Sounds", [...]], ["Delivery", [...]]],
    an empty group left out."""
    sounds = [tag for tag in found if tag in SOUND_TAGS]
    deliveries = [tag for tag in found if tag not in SOUND_TAGS]
    return [[label, group] for label, group in (("Sounds", sounds),
                                                ("Delivery", deliveries)) if group]


def variant_tags(variant: str, model_dir=None) -> tuple[str, ...]:
    """The tags `variant` speaks: Turbo's list, or () for a variant that has none."""
    return turbo_tags(model_dir) if variant == TURBO else ()
