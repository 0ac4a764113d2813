"""Random-weight Chatterbox checkpoints in the exact on-disk layout of the real ones.

The real weights cannot be downloaded where this project is built and tested
(docs/DESIGN.md, "Testing without downloadable weights"), so tests build checkpoint folders
from chatterbox's own model classes with random weights and load them through the
same upstream ``from_local`` the real weights take.  Random weights make noise, but
every stage runs for real: the voice encoder, the S3 tokenizer, token sampling, the
flow decoder, the vocoder and the watermark.

Deterministic length.  A random T3 would sample up to its 1000-token cap, so the
builder edits a few weights so that ``generate()`` yields exactly ``stop_after``
speech tokens (``stop_after * 960`` samples at 24 kHz, see ``expected_samples``):

* original / multilingual (Llama T3 with learned speech position embeddings):
  three orthonormal directions d, e, u.  Speech position ``p = stop_after`` gets a
  huge vector along d and the stop token's ``speech_head`` row is ``K*d``, so the step
  fed position p samples the stop token (T3.inference adds
  ``get_fixed_embedding(i + 1)`` to the token sampled at step i, so step p is the
  first step that sees position p and p speech tokens precede the stop).  Positions
  p-2 and p-1 get a huge vector along e and one valid token X has row ``K*e``, so the
  last two tokens are X X: the multilingual model's AlignmentStreamAnalyzer
  suppresses the stop token until it thinks the text is read, but forces it after a
  token repeats, so it stops at p as well.  Every other position gets ``-A*(d+e+u)``
  so the stop token, X and the rows of the non-speech ids (>= 6561, rows ``K*u``,
  which upstream would drop or which would crash S3Gen) are all far below the
  random tokens there; each valid row also gets ``-E[t]`` direction subtracted so a
  token is never sampled twice in a row by chance (that would trip the repetition
  guard early).
* turbo (GPT-2 T3: no speech position table; GPT-2's own ``wpe`` is indexed by the
  absolute position, which moves with the prompt length, so it cannot count speech
  tokens): a token chain.  The start-of-speech embedding and the embeddings of
  ``stop_after`` chosen speech tokens T1..Tn get huge vectors along orthonormal
  directions e0..en, and the head row of T(k+1) (of the stop token after Tn) is
  ``K*e_k``.  Turbo's T3 therefore always emits the same n tokens then stops,
  whatever the text; upstream adds 3 silence tokens, so S3Gen receives n + 3.

Building a full-size variant takes about a minute and ~5 GB RAM, so
``cached_checkpoint_root`` builds once per machine into ``$CBX_FIXTURE_CACHE``
(default ``<repo>/.fixture_cache``), atomically and under a file lock.

CLI: ``python -m cbx.dev.fixture --variants original [multilingual turbo]
[--dest DIR]`` prints the model root (the folder CBX_MODEL_DIR should point to).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

from ..paths import REPO_ROOT

# Bump when anything about the built files changes, so old caches are not reused.
BUILDER_VERSION = 2
DEFAULT_STOP_AFTER = 8
CACHE_ENV = "CBX_FIXTURE_CACHE"
VARIANTS = ("original", "multilingual", "turbo")

# Files each variant's upstream from_local reads (conds.pt is the built-in voice).
LAYOUT = {
    "original": ("ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors",
                 "tokenizer.json", "conds.pt"),
    "multilingual": ("ve.pt", "t3_mtl23ls_v2.safetensors", "s3gen.pt",
                     "grapheme_mtl_merged_expanded_v1.json", "conds.pt"),
    "turbo": ("ve.safetensors", "t3_turbo_v1.safetensors", "s3gen_meanflow.safetensors",
              "vocab.json", "merges.txt", "tokenizer_config.json", "conds.pt"),
}

SAMPLES_PER_TOKEN = 960       # S3 tokens are 25/s; S3Gen writes 24 kHz: 2 mel frames x 480
TURBO_SILENCE_TOKENS = 3      # ChatterboxTurboTTS.generate appends 3 S3GEN_SIL tokens
# Long enough for every variant (turbo needs > 5 s), and no longer: S3Gen reads the
# whole prompt at every step, so on a CPU a 10 s prompt made each test chunk ~1.7x slower.
CONDS_CLIP_SECONDS = 6.0

# Magnitudes of the stop trick (see module docstring).
_HUGE = 1000.0    # the marked positions / chain embeddings
_HEAD = 2.0       # K: scale of the rows that read the marked directions
_OFFSET = 32.0    # A: pushes d, e, u negative at ordinary positions (|speech_emb| ~ 32)
_NO_REPEAT = 1.0  # how strongly a valid token's row points away from its own embedding


def expected_tokens(variant: str, stop_after: int = DEFAULT_STOP_AFTER) -> int:
    """Speech tokens S3Gen receives for one generate() call of a fixture model."""
    return stop_after + (TURBO_SILENCE_TOKENS if variant == "turbo" else 0)


def expected_samples(variant: str, stop_after: int = DEFAULT_STOP_AFTER) -> int:
    """Length in samples (24 kHz) of the audio one generate() call returns."""
    return expected_tokens(variant, stop_after) * SAMPLES_PER_TOKEN


# --------------------------------------------------------------------------- tokenizers

_SPECIALS = ["[START]", "[STOP]", "[UNK]", "[SPACE]", "[PAD]", "[SEP]", "[CLS]", "[MASK]"]
_PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_LATIN_EXTRA = list("àáâäãåæçèéêëìíîïñòóôöõøùúûüýÿßœ"
                    "ÀÁÂÄÃÅÆÇÈÉÊËÌÍÎÏÑÒÓÔÖÕØÙÚÛÜÝŒ")


def _ordered_unique(items):
    return list(dict.fromkeys(items))


def _english_vocab() -> dict[str, int]:
    """Character vocab laid out like the real one: [STOP]=0, [START]=255 (T3Config)."""
    chars = _ordered_unique([chr(c) for c in range(ord("a"), ord("z") + 1)]
                            + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
                            + [str(d) for d in range(10)] + _PUNCT + _LATIN_EXTRA)
    vocab = {"[STOP]": 0, "[UNK]": 1, "[SPACE]": 2}
    for ch in chars:
        vocab[ch] = len(vocab)
    # Latin Extended-A fills the ids up to 254 (no holes below [START]).
    filler = (chr(c) for c in range(0x0100, 0x0180) if chr(c) not in vocab)
    while len(vocab) < 255:
        vocab[next(filler)] = len(vocab)
    vocab["[START]"] = 255
    nxt = 256
    for tok in _SPECIALS:
        if tok not in vocab:
            vocab[tok] = nxt
            nxt += 1
    return vocab


def _multilingual_vocab() -> dict[str, int]:
    """Scripts of the 23 languages after MTLTokenizer's lowercase + NFKD; CJK ideographs
    and emoji are left out on purpose so tests can meet [UNK]."""
    from chatterbox.mtl_tts import SUPPORTED_LANGUAGES

    ranges = [
        (0x0300, 0x036F),   # combining marks (NFKD splits accents off)
        (0x0370, 0x03FF),   # Greek
        (0x0400, 0x04FF),   # Cyrillic
        (0x0590, 0x05FF),   # Hebrew
        (0x0600, 0x06FF),   # Arabic
        (0x0900, 0x097F),   # Devanagari
        (0x1100, 0x11FF),   # Hangul Jamo (korean_normalize decomposes syllables)
        (0x3040, 0x309F),   # Hiragana
        (0x30A0, 0x30FF),   # Katakana
    ]
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    chars += [str(d) for d in range(10)] + _PUNCT + list("¡¿«»、。，？！「」・ー")
    chars += [unicodedata.normalize("NFKD", c)[0] for c in _LATIN_EXTRA]
    for lo, hi in ranges:
        chars += [chr(c) for c in range(lo, hi + 1) if unicodedata.category(chr(c)) != "Cn"]
    chars = _ordered_unique(chars)
    vocab = {"[STOP]": 0, "[UNK]": 1, "[SPACE]": 2}
    tags = [f"[{lang}]" for lang in SUPPORTED_LANGUAGES]
    cangjie = [f"[cj_{c}]" for c in "abcdefghijklmnopqrstuvwxyz."]
    for tok in chars:
        if len(vocab) == 255:
            vocab["[START]"] = 255
        vocab[tok] = len(vocab)
    for tok in tags + cangjie + _SPECIALS:
        if tok not in vocab:
            vocab[tok] = len(vocab)
    assert vocab["[START]"] == 255
    return vocab


def _write_char_tokenizer(path: Path, vocab: dict[str, int], added: list[str]) -> None:
    """A `tokenizers` BPE with no merges: one token per character, unknown -> [UNK]."""
    from tokenizers import Tokenizer, models

    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tok.add_special_tokens(added)   # all already in vocab, so ids are kept
    tok.save(str(path))


def write_english_tokenizer(path: Path) -> None:
    _write_char_tokenizer(path, _english_vocab(), list(_SPECIALS))


def write_multilingual_tokenizer(path: Path) -> None:
    from chatterbox.mtl_tts import SUPPORTED_LANGUAGES

    added = list(_SPECIALS) + [f"[{lang}]" for lang in SUPPORTED_LANGUAGES] + \
        [f"[cj_{c}]" for c in "abcdefghijklmnopqrstuvwxyz."]
    _write_char_tokenizer(path, _multilingual_vocab(), added)


def write_turbo_tokenizer(folder: Path, seed: int) -> None:
    """A small byte-level BPE saved as a GPT-2 tokenizer (vocab.json, merges.txt, ...)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    from .clips import DEFAULT_TEXT

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    corpus = [DEFAULT_TEXT, "Hello world. How are you today? I am fine, thank you!",
              "Numbers 0 1 2 3 4 5 6 7 8 9 and symbols: , . ; ' \" ( ) - ?"] * 20
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = GPT2TokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                             eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.save_pretrained(str(folder))
    # transformers 5 writes only tokenizer.json; the real repo ships the slow files too.
    vocab = tok.get_vocab()
    if not (folder / "vocab.json").exists():
        (folder / "vocab.json").write_text(
            json.dumps(dict(sorted(vocab.items(), key=lambda kv: kv[1])), ensure_ascii=False),
            encoding="utf-8")
    if not (folder / "merges.txt").exists():
        merges = json.loads(tok.to_str())["model"]["merges"]
        lines = [m if isinstance(m, str) else " ".join(m) for m in merges]
        (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines) + "\n",
                                           encoding="utf-8")


# --------------------------------------------------------------------------- weights

def _state_dict_for_save(module) -> dict:
    """Contiguous, unshared tensors: what safetensors.save_file and a strict load need."""
    seen = set()
    out = {}
    for k, v in module.state_dict().items():
        v = v.detach()
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset())
        if ptr in seen or not v.is_contiguous():
            v = v.contiguous().clone()
        seen.add(ptr)
        out[k] = v
    return out


def _save(module, path: Path) -> None:
    state = _state_dict_for_save(module)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(state, str(path))
    else:
        import torch
        torch.save(state, str(path))


def _orthonormal(dim: int, n: int, gen, zero_mean: bool = False):
    """n orthonormal columns in R^dim (zero-mean so a LayerNorm keeps their direction)."""
    import torch

    m = torch.randn(dim, n, generator=gen)
    if zero_mean:
        m = m - m.mean(dim=0, keepdim=True)
    q, _ = torch.linalg.qr(m)
    if zero_mean:
        q = q - q.mean(dim=0, keepdim=True)
        q, _ = torch.linalg.qr(q)
    return q.T.contiguous()   # (n, dim)


def install_stop_llama(t3, stop_after: int, seed: int) -> dict:
    """Make the Llama T3 (original, multilingual) emit exactly `stop_after` tokens."""
    import torch

    hp = t3.hp
    pos = t3.speech_pos_emb.emb.weight
    if not 2 <= stop_after < pos.shape[0] - 1:
        raise ValueError(f"stop_after must be in [2, {pos.shape[0] - 2}], got {stop_after}")
    gen = torch.Generator().manual_seed(seed + 7919)
    d, e, u = _orthonormal(pos.shape[1], 3, gen)
    head = t3.speech_head.weight
    n_valid = hp.start_speech_token              # ids below it are real S3 speech tokens
    repeat_token = int(torch.randint(0, n_valid, (1,), generator=gen))
    with torch.no_grad():
        emb = t3.speech_emb.weight[:n_valid]
        head[:n_valid] -= _NO_REPEAT * emb / emb.norm(dim=1, keepdim=True)
        pos -= _OFFSET * (d + e + u)
        pos[stop_after] = _HUGE * d
        pos[stop_after - 1] = _HUGE * e
        pos[stop_after - 2] = _HUGE * e
        head[n_valid:] = _HEAD * u                # start token and unused ids
        head[hp.stop_speech_token] = _HEAD * d
        head[repeat_token] = _HEAD * e
    return {"method": "speech_pos_emb", "repeat_token": repeat_token}


def install_stop_gpt2(t3, stop_after: int, seed: int) -> dict:
    """Make the GPT-2 T3 (turbo) emit a fixed chain of `stop_after` tokens, then stop."""
    import torch

    hp = t3.hp
    if stop_after < 1:
        raise ValueError(f"stop_after must be >= 1, got {stop_after}")
    gen = torch.Generator().manual_seed(seed + 7919)
    n_valid = hp.start_speech_token
    chain = torch.randperm(n_valid, generator=gen)[:stop_after].tolist()
    dirs = _orthonormal(t3.speech_emb.weight.shape[1], stop_after + 1, gen, zero_mean=True)
    with torch.no_grad():
        emb, head = t3.speech_emb.weight, t3.speech_head.weight
        inputs = [hp.start_speech_token] + chain          # token fed at step k
        outputs = chain + [hp.stop_speech_token]          # token it must produce
        for k, (tok_in, tok_out) in enumerate(zip(inputs, outputs)):
            emb[tok_in] = _HUGE * dirs[k]
            head[tok_out] = _HEAD * dirs[k]
            t3.speech_head.bias[tok_out] = 0.0
    return {"method": "token_chain", "chain": chain}


def _turbo_hp():
    """T3 hyper-parameters of Turbo, as ChatterboxTurboTTS.from_local sets them."""
    from cbx.engine.fastload import turbo_t3_config

    return turbo_t3_config()


# --------------------------------------------------------------------------- build

def build_checkpoint(variant: str, dest: Path, *, stop_after: int = DEFAULT_STOP_AFTER,
                     seed: int = 0) -> Path:
    """Write a random-weight checkpoint of `variant` into the folder `dest`.

    The folder then loads with the variant's upstream ``from_local(dest, device)``.
    Returns `dest`.  Deterministic for a given (variant, stop_after, seed) and clip.
    """
    _build(variant, Path(dest), stop_after=stop_after, seed=seed)
    return Path(dest)


def _build(variant: str, dest: Path, *, stop_after: int, seed: int) -> dict:
    """build_checkpoint's body; returns what it did (stop method, clip source)."""
    import torch

    with torch.random.fork_rng(devices=[]):   # leave the caller's RNG as it was
        return _build_seeded(variant, dest, stop_after=stop_after, seed=seed)


def _build_seeded(variant: str, dest: Path, *, stop_after: int, seed: int) -> dict:
    import torch

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    info: dict = {"variant": variant, "stop_after": stop_after, "seed": seed}

    from chatterbox.models.s3gen import S3Gen
    from chatterbox.models.t3 import T3
    from chatterbox.models.voice_encoder import VoiceEncoder

    # Each module is saved and freed before the next is made (T3 alone is 2 GB, and
    # safetensors serialises a second copy in memory while saving).
    if variant == "original":
        from chatterbox.models.tokenizers import EnTokenizer
        from chatterbox.tts import ChatterboxTTS as Model
        ve_file, t3_file, s3_file = "ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors"
        t3 = T3()
        info["stop"] = install_stop_llama(t3, stop_after, seed)
    elif variant == "multilingual":
        from chatterbox.models.t3.modules.t3_config import T3Config
        from chatterbox.mtl_tts import ChatterboxMultilingualTTS as Model
        ve_file, t3_file, s3_file = "ve.pt", "t3_mtl23ls_v2.safetensors", "s3gen.pt"
        t3 = T3(T3Config.multilingual())
        info["stop"] = install_stop_llama(t3, stop_after, seed)
    else:
        from chatterbox.tts_turbo import ChatterboxTurboTTS as Model
        ve_file, t3_file, s3_file = ("ve.safetensors", "t3_turbo_v1.safetensors",
                                     "s3gen_meanflow.safetensors")
        t3 = T3(_turbo_hp())
        info["stop"] = install_stop_gpt2(t3, stop_after, seed)
    _save(t3.eval(), dest / t3_file)
    t3_stand_in = _HparamsOnly(t3.hp)
    del t3
    gc.collect()

    s3gen = S3Gen(meanflow=(variant == "turbo")).eval()
    _save(s3gen, dest / s3_file)

    if variant == "original":
        write_english_tokenizer(dest / "tokenizer.json")
        tokenizer = EnTokenizer(str(dest / "tokenizer.json"))
    elif variant == "multilingual":
        write_multilingual_tokenizer(dest / "grapheme_mtl_merged_expanded_v1.json")
        tokenizer = None   # conds need no tokenizer; MTLTokenizer would try the Hub
    else:
        from transformers import AutoTokenizer
        write_turbo_tokenizer(dest, seed)
        tokenizer = AutoTokenizer.from_pretrained(str(dest))

    ve = VoiceEncoder().eval()
    _save(ve, dest / ve_file)

    # The built-in voice: real Conditionals computed by the model's own code from a clip.
    from .clips import speech, write
    wav, info["conds_clip"] = speech(CONDS_CLIP_SECONDS, seed=seed)
    with tempfile.TemporaryDirectory(prefix="cbx_conds_") as tmp:
        clip = write(Path(tmp) / "builtin_voice.wav", wav)
        model = Model(t3_stand_in, s3gen, ve, tokenizer, "cpu")
        with torch.inference_mode():
            model.prepare_conditionals(str(clip), exaggeration=0.5)
        model.conds.save(dest / "conds.pt")

    del model, s3gen, ve, tokenizer
    gc.collect()
    return info


class _HparamsOnly:
    """Stands in for the saved-and-freed T3 while conds are made: prepare_conditionals
    reads only ``t3.hp`` (speech_cond_prompt_len)."""

    def __init__(self, hp):
        self.hp = hp


# --------------------------------------------------------------------------- offline

@contextlib.contextmanager
def offline_multilingual():
    """Let ChatterboxMultilingualTTS.from_local run without internet.

    MTLTokenizer builds a Chinese segmenter with ``spacy_pkuseg.pkuseg()``, which
    downloads its model from GitHub and raises ConnectionError offline (upstream only
    tolerates ImportError).  Hiding the module takes upstream's own "pkuseg not
    available" path; Chinese text is then not segmented, which a random model cannot
    tell anyway.  The Cangjie table download (hf_hub_download) fails softly but only
    after ~25 s of retries, so huggingface_hub is put in offline mode meanwhile.
    """
    import huggingface_hub.constants as hf_constants

    missing = object()
    saved = sys.modules.get("spacy_pkuseg", missing)
    saved_offline = hf_constants.HF_HUB_OFFLINE
    sys.modules["spacy_pkuseg"] = None   # import now raises ImportError
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = saved_offline
        if saved is missing:
            sys.modules.pop("spacy_pkuseg", None)
        else:
            sys.modules["spacy_pkuseg"] = saved


# --------------------------------------------------------------------------- cache

def chatterbox_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("chatterbox-tts")
    except PackageNotFoundError:
        return "unknown"


def cache_dir() -> Path:
    """Where fixture builds are kept: $CBX_FIXTURE_CACHE or <repo>/.fixture_cache."""
    value = os.environ.get(CACHE_ENV)
    return Path(value).expanduser().resolve() if value else REPO_ROOT / ".fixture_cache"


def cache_key(stop_after: int = DEFAULT_STOP_AFTER, seed: int = 0) -> str:
    return f"chatterbox-{chatterbox_version()}_builder-{BUILDER_VERSION}_stop-{stop_after}_seed-{seed}"


def _build_atomically(variant: str, final: Path, *, stop_after: int, seed: int) -> dict:
    """Build into a temp sibling, then rename, so a half-built folder is never visible."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{variant}-building-", dir=final.parent))
    start = time.perf_counter()
    try:
        record = _build(variant, tmp / variant, stop_after=stop_after, seed=seed)
        record.update(build_seconds=round(time.perf_counter() - start, 1),
                      built_at=time.time(), builder_version=BUILDER_VERSION,
                      chatterbox_version=chatterbox_version(), pid=os.getpid())
        os.replace(tmp / variant, final)
        (final.parent / f"{variant}.fixture.json").write_text(json.dumps(record, indent=2),
                                                             encoding="utf-8")
        return record
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _complete(folder: Path, variant: str) -> bool:
    return folder.is_dir() and all((folder / f).is_file() for f in LAYOUT[variant])


def build_record(root: Path, variant: str) -> dict:
    """What the cache recorded about a build (seconds taken, when, by which process)."""
    return json.loads((Path(root) / f"{variant}.fixture.json").read_text(encoding="utf-8"))


def _build_in_child(variant: str, root: Path, *, stop_after: int, seed: int) -> None:
    """Run the build in a fresh interpreter: its ~6 GB peak goes back to the OS when it
    exits instead of staying in the (long-lived) test process's heap."""
    import subprocess

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "cbx.dev.fixture", "--variants", variant, "--dest", str(root),
           "--stop-after", str(stop_after), "--seed", str(seed), "--force"]
    proc = subprocess.run(cmd, cwd=str(REPO_ROOT), env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
        raise RuntimeError(f"building the {variant} fixture checkpoint failed "
                           f"(exit {proc.returncode}):\n{tail}")


def cached_checkpoint_root(variants=("original",), *, stop_after: int = DEFAULT_STOP_AFTER,
                           seed: int = 0, in_subprocess: bool = True) -> Path:
    """A model root (what CBX_MODEL_DIR points to) holding `<variant>/` for each variant,
    built once per machine and reused; safe when several processes ask at once.

    Builds run in a child interpreter unless `in_subprocess` is False."""
    from filelock import FileLock

    if isinstance(variants, str):
        variants = (variants,)
    root = cache_dir() / cache_key(stop_after, seed)
    root.mkdir(parents=True, exist_ok=True)
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")
        final = root / variant
        if _complete(final, variant):
            continue
        with FileLock(str(root / f".{variant}.lock")):
            if not _complete(final, variant):      # another process may have just built it
                if final.exists():
                    shutil.rmtree(final)
                if in_subprocess:
                    _build_in_child(variant, root, stop_after=stop_after, seed=seed)
                else:
                    _build_atomically(variant, final, stop_after=stop_after, seed=seed)
                if not _complete(final, variant):
                    raise RuntimeError(f"the {variant} fixture build left {final} incomplete")
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cbx.dev.fixture",
        description="Build random-weight Chatterbox checkpoints (test fixture). Prints the "
                    "model root to point CBX_MODEL_DIR at.")
    parser.add_argument("--variants", nargs="+", default=["original"], choices=VARIANTS)
    parser.add_argument("--dest", type=Path, default=None,
                        help="model root to build into (default: the fixture cache)")
    parser.add_argument("--stop-after", type=int, default=DEFAULT_STOP_AFTER,
                        help="speech tokens each generate() call yields")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild folders that exist")
    args = parser.parse_args(argv)

    if args.dest is None:
        root = cached_checkpoint_root(tuple(args.variants), stop_after=args.stop_after,
                                      seed=args.seed)
    else:
        root = args.dest.expanduser().resolve()
        for variant in args.variants:
            final = root / variant
            if _complete(final, variant) and not args.force:
                print(f"{variant}: already built in {final}", file=sys.stderr)
                continue
            if final.exists():
                shutil.rmtree(final)
            rec = _build_atomically(variant, final, stop_after=args.stop_after, seed=args.seed)
            print(f"{variant}: built in {rec['build_seconds']} s -> {final}", file=sys.stderr)
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
