"""What each Chatterbox model variant is made of and how it behaves.

One table that the model manager, the file check, setup_env.py (download lists) and
cleanup.py all read, so a file name is written in exactly one place.
Layer 1: standard library only (setup_env.py imports this before anything is installed).
"""
from __future__ import annotations

from dataclasses import dataclass, field

BUILTIN_VOICE_FILE = "conds.pt"    # a variant's built-in voice (its conditionals)

@dataclass(frozen=True)
class Variant:
    name: str                      # folder name in model_cache/ and the API's variant id
    label: str                     # what the dashboard shows
    repo_id: str                   # Hugging Face repository setup_env.py downloads from
    module: str                    # chatterbox module holding the class
    class_name: str
    required_files: tuple[str, ...]
    # which required file holds which model part (ve, t3, s3gen), and the text tokenizer's
    # file (None: a Hugging Face tokenizer folder); the loader reads these names
    part_files: dict = field(default_factory=dict)
    tokenizer_file: str | None = None
    optional_files: tuple[str, ...] = (BUILTIN_VOICE_FILE,)
    download_patterns: tuple[str, ...] = ()   # extra globs setup_env.py fetches (tokenizer files)
    hub_cache_files: tuple[str, ...] = ()     # files upstream itself reads via the Hub cache
    warm_pkuseg: bool = False                 # upstream builds spacy_pkuseg (downloads once)
    defaults: dict = field(default_factory=dict)   # upstream generate() defaults
    ignored_settings: tuple[str, ...] = ()
    min_voice_seconds: float = 2.0
    voice_seconds_used: float = 10.0   # the longest part of a clip the model reads
    approx_download_gb: float = 0.0
    languages: tuple[str, ...] = ()

    @property
    def all_files(self) -> tuple[str, ...]:
        return self.required_files + self.optional_files


MULTILINGUAL_LANGUAGES = (
    "ar", "da", "de", "el", "en", "es", "fi", "fr", "he", "hi", "it", "ja", "ko", "ms",
    "nl", "no", "pl", "pt", "ru", "sv", "sw", "tr", "zh",
)

VARIANTS: dict[str, Variant] = {
    v.name: v for v in (
        Variant(
            name="original",
            label="Chatterbox (English)",
            repo_id="ResembleAI/chatterbox",
            module="chatterbox.tts",
            class_name="ChatterboxTTS",
            required_files=("ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors",
                            "tokenizer.json"),
            part_files=dict(ve="ve.safetensors", t3="t3_cfg.safetensors",
                            s3gen="s3gen.safetensors"),
            tokenizer_file="tokenizer.json",
            defaults=dict(exaggeration=0.5, cfg_weight=0.5, temperature=0.8, min_p=0.05,
                          top_p=1.0, repetition_penalty=1.2),
            min_voice_seconds=2.0,
            voice_seconds_used=10.0,
            approx_download_gb=3.2,
        ),
        Variant(
            name="turbo",
            label="Chatterbox-Turbo (English, fast)",
            repo_id="ResembleAI/chatterbox-turbo",
            module="chatterbox.tts_turbo",
            class_name="ChatterboxTurboTTS",
            required_files=("ve.safetensors", "t3_turbo_v1.safetensors",
                            "s3gen_meanflow.safetensors", "vocab.json", "merges.txt"),
            part_files=dict(ve="ve.safetensors", t3="t3_turbo_v1.safetensors",
                            s3gen="s3gen_meanflow.safetensors"),
            download_patterns=("*.json", "*.txt"),
            defaults=dict(exaggeration=0.0, cfg_weight=0.0, temperature=0.8, min_p=0.0,
                          top_p=0.95, repetition_penalty=1.2),
            ignored_settings=("exaggeration", "cfg_weight", "min_p"),
            min_voice_seconds=5.0,
            voice_seconds_used=15.0,
            approx_download_gb=3.0,
        ),
        Variant(
            name="multilingual",
            label="Chatterbox-Multilingual (23 languages)",
            repo_id="ResembleAI/chatterbox",
            module="chatterbox.mtl_tts",
            class_name="ChatterboxMultilingualTTS",
            required_files=("ve.pt", "t3_mtl23ls_v2.safetensors", "s3gen.pt",
                            "grapheme_mtl_merged_expanded_v1.json"),
            part_files=dict(ve="ve.pt", t3="t3_mtl23ls_v2.safetensors", s3gen="s3gen.pt"),
            tokenizer_file="grapheme_mtl_merged_expanded_v1.json",
            optional_files=(BUILTIN_VOICE_FILE, "Cangjie5_TC.json"),
            hub_cache_files=("Cangjie5_TC.json",),
            warm_pkuseg=True,
            defaults=dict(exaggeration=0.5, cfg_weight=0.5, temperature=0.8, min_p=0.05,
                          top_p=1.0, repetition_penalty=2.0),
            min_voice_seconds=2.0,
            voice_seconds_used=10.0,
            approx_download_gb=3.0,
            languages=MULTILINGUAL_LANGUAGES,
        ),
    )
}

DEFAULT_VARIANT = "original"


def get_variant(name: str) -> Variant:
    """Look a variant up by name; unknown names fail with the list of valid ones."""
    from .errors import InvalidSetting

    try:
        return VARIANTS[name]
    except (KeyError, TypeError):        # TypeError: a list or dict is not a name
        raise InvalidSetting(
            f"Unknown model variant {name!r}.",
            f"Use one of: {', '.join(VARIANTS)}.",
        ) from None
