"""Environment checks: are the libraries installed, are the weight files present and
whole, which device will be used and how much memory is there.

Layer 2. The dashboard must explain a broken installation, so this module imports
nothing heavy at import time: torch and psutil are imported inside the functions that
need them, and the library check uses import specs and package metadata only.
Weight files are verified structurally (headers, sizes, zip directories) without
loading any tensor, so checking a 3 GB cache takes milliseconds.
"""
from __future__ import annotations

import datetime as _dt
import html
import importlib.metadata
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from . import options, paths
from .errors import (SETUP_COMMAND, CbxError, EnvironmentNotSetup, InvalidSetting,
                     ModelFilesMissing)
from .variants import DEFAULT_VARIANT, VARIANTS, get_variant

# ---------------------------------------------------------------------------------------
# Libraries
# ---------------------------------------------------------------------------------------

# (import name, distribution name on PyPI). The distribution name is what
# importlib.metadata knows the version under.
REQUIRED_LIBRARIES: tuple[tuple[str, str], ...] = (
    ("torch", "torch"),
    ("torchaudio", "torchaudio"),
    ("chatterbox", "chatterbox-tts"),
    ("transformers", "transformers"),
    ("librosa", "librosa"),
    ("soundfile", "soundfile"),
    ("huggingface_hub", "huggingface_hub"),
    ("ipywidgets", "ipywidgets"),
    ("voila", "voila"),
    ("numpy", "numpy"),
    ("psutil", "psutil"),
)


@dataclass
class LibraryStatus:
    name: str                 # import name
    distribution: str         # PyPI distribution name
    importable: bool
    version: str | None = None
    error: str | None = None  # why it is not importable

    def to_dict(self) -> dict:
        return asdict(self)


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _check_one(name: str, dist: str, import_modules: bool) -> LibraryStatus:
    version = _dist_version(dist)
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:   # broken parent package or odd sys.modules entry
        return LibraryStatus(name, dist, False, version, f"{type(exc).__name__}: {exc}")
    if spec is None:
        return LibraryStatus(name, dist, False, version, f"No module named {name!r}")
    if import_modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # any failure while importing is exactly what we report
            return LibraryStatus(name, dist, False, version, f"{type(exc).__name__}: {exc}")
    return LibraryStatus(name, dist, True, version, None)


def check_libraries(import_modules: bool = False,
                    libraries: Iterable[tuple[str, str]] | None = None,
                    ) -> list[LibraryStatus]:
    """Which required libraries are installed, with versions.

    By default only the import machinery is asked (find_spec), which is cheap and does not
    import torch. `import_modules=True` really imports each one, which also catches
    installed-but-broken packages (a CUDA DLL that fails to load on Windows) at the cost of
    several seconds.
    """
    if libraries is None:
        libraries = REQUIRED_LIBRARIES
    return [_check_one(name, dist, import_modules) for name, dist in libraries]


def require_libraries(names: Iterable[str] | None = None,
                      import_modules: bool = False) -> list[LibraryStatus]:
    """Raise EnvironmentNotSetup naming every missing library; return the statuses if fine."""
    if names is None:
        libs = list(REQUIRED_LIBRARIES)
    else:
        dists = dict(REQUIRED_LIBRARIES)
        libs = [(n, dists.get(n, n)) for n in names]
    statuses = check_libraries(import_modules=import_modules, libraries=libs)
    missing = [s for s in statuses if not s.importable]
    if missing:
        raise _libraries_error(missing)
    return statuses


def _libraries_error(missing: list[LibraryStatus]) -> EnvironmentNotSetup:
    names = ", ".join(s.distribution for s in missing)
    detail = "; ".join(f"{s.name}: {s.error}" for s in missing)
    return EnvironmentNotSetup(
        f"Required libraries cannot be imported: {names}.",
        f"Run `{SETUP_COMMAND}` to install them into this environment, then restart the "
        f"kernel (interpreter: {sys.executable}).",
        details=detail,
    )


# ---------------------------------------------------------------------------------------
# Weight files
# ---------------------------------------------------------------------------------------

# Bits per element of each safetensors dtype (the format's own table, sub-byte float
# types included). A dtype not listed here is one the safetensors loader rejects.
_SAFETENSORS_DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
}
_SAFETENSORS_MAX_HEADER = 100_000_000   # the safetensors format's own limit
_USIZE_LIMIT = 2 ** 64                  # shapes and offsets are u64 in the format

# torch.save's legacy (non-zip) format starts with a protocol-2 pickle of a magic number.
_TORCH_LEGACY_PREFIX = b"\x80\x02\x8a\x0a"

# JSON weight files whose top level is not an object: upstream reads Cangjie5_TC.json as
# a list of strings (and tolerates a bad one). Every other one (tokenizer.json,
# vocab.json, grapheme_mtl_*.json) is parsed into an object by its loader.
_JSON_ANY_TOP_LEVEL = frozenset({"cangjie5_tc.json"})


class _Damaged(Exception):
    """Raised inside the structural readers: the file does not match its format. The
    message is the `problem` shown to the user; check_file never lets it escape."""


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed in JSON")


def _load_json(text: str, what: str):
    """Parse strict JSON (no NaN/Infinity), turning every way hostile text makes the
    parser fail (syntax, nesting deep enough to exhaust the recursion limit, integers
    too long to convert) into _Damaged naming `what`."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _Damaged(f"truncated or corrupt: {what} is not valid JSON "
                       f"({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise _Damaged(f"corrupt: {what} is JSON nested too deeply to be real") from None
    except (ValueError, TypeError, OverflowError) as exc:
        reason = str(exc).split(";")[0]   # not the int-digits limit's advice to raise it
        raise _Damaged(f"corrupt: {what} is not standard JSON ({reason})") from None


def _short(value, limit: int = 60) -> str:
    """repr() cut to a line: a hostile header can hold megabyte-long values, and lists
    nested almost as deep as the parser allows (whose repr can hit the recursion limit)."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        text = f"<a deeply nested {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _header_uint(value, what: str) -> int:
    # bool is a subclass of int; JSON floats (2.0, 1e400) are rejected by the format too.
    if type(value) is not int or not 0 <= value < _USIZE_LIMIT:
        raise _Damaged(f"corrupt: {what} is {_short(value)}, not an integer from 0 to 2**64-1")
    return value


def _read_safetensors_header(path: Path, size: int) -> tuple[int, dict]:
    """Read and parse the header of a safetensors file: (header length, header object)."""
    if size < 8:
        raise _Damaged(f"truncated: {size} bytes, shorter than the 8-byte header length")
    with path.open("rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise _Damaged(f"truncated: {len(prefix)} bytes, shorter than the 8-byte "
                           "header length")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > _SAFETENSORS_MAX_HEADER:
            raise _Damaged(f"corrupt: header length {header_len} is not plausible")
        if 8 + header_len > size:
            raise _Damaged(f"truncated: {size} bytes on disk, but the header alone needs "
                           f"{8 + header_len}")
        raw = fh.read(header_len)
    if len(raw) < header_len:
        raise _Damaged(f"truncated: the header needs {header_len} bytes, "
                       f"only {len(raw)} could be read")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Damaged(f"corrupt: the header is not valid JSON ({exc})") from None
    header = _load_json(text, "the header")
    if not isinstance(header, dict):
        raise _Damaged(f"corrupt: the header is a JSON {type(header).__name__}, "
                       "not an object")
    return header_len, header


def _safetensors_tensor(key: str, entry) -> tuple[int, int, int, str, list[int]]:
    """Validate one header entry: (begin, end, the byte size its dtype and shape need,
    dtype, shape)."""
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise _Damaged(f"corrupt: header entry {_short(key)} lacks dtype/shape/data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    bits = _SAFETENSORS_DTYPE_BITS.get(dtype) if isinstance(dtype, str) else None
    if bits is None:
        raise _Damaged(f"corrupt: tensor {_short(key)} has unknown dtype {_short(dtype)}")
    if not isinstance(shape, list):
        raise _Damaged(f"corrupt: tensor {_short(key)} has shape {_short(shape)}, not a list")
    if not isinstance(offsets, list) or len(offsets) != 2:
        raise _Damaged(f"corrupt: tensor {_short(key)} has data_offsets {_short(offsets)}, "
                       "not [begin, end]")
    dims = [_header_uint(d, f"a dimension of tensor {_short(key)}") for d in shape]
    begin, end = (_header_uint(o, f"an offset of tensor {_short(key)}") for o in offsets)
    if begin > end:
        raise _Damaged(f"corrupt: tensor {_short(key)} has offsets {begin}..{end}")
    # Element count; the format computes it in u64 and rejects an overflow, and stopping
    # there keeps a hostile shape of thousands of huge dimensions cheap to check.
    count = 0 if 0 in dims else 1
    for d in dims if count else ():
        count *= d
        if count * bits >= _USIZE_LIMIT:
            raise _Damaged(f"corrupt: tensor {_short(key)} has an impossible shape "
                           f"({dtype} with {len(dims)} dimensions overflows)")
    if count * bits % 8:
        raise _Damaged(f"corrupt: tensor {_short(key)} ({dtype} {_short(dims)}) is not a whole "
                       "number of bytes")
    return begin, end, count * bits // 8, dtype, dims


def _check_safetensors(path: Path, size: int) -> str | None:
    """Return why a safetensors file is unusable, or None. Reads only the header and
    validates it the way the safetensors loader does: every entry a tensor of a known
    dtype whose shape needs exactly the bytes its offsets span, the tensors contiguous
    from the start of the data region, and the file ending where the last one ends."""
    try:
        header_len, header = _read_safetensors_header(path, size)
        metadata = header.get("__metadata__")
        if metadata is not None and not (
                isinstance(metadata, dict)
                and all(isinstance(v, str) for v in metadata.values())):
            raise _Damaged("corrupt: __metadata__ is not a map of strings")
        tensors = sorted(((*_safetensors_tensor(key, entry), key)
                          for key, entry in header.items() if key != "__metadata__"),
                         key=lambda t: (t[0], t[1]))   # by data_offsets, as the loader does
        data_end = 0
        for begin, end, nbytes, dtype, dims, key in tensors:
            if begin != data_end:
                raise _Damaged(f"corrupt: tensor {_short(key)} starts at data byte {begin}, "
                               f"expected {data_end} (tensors overlap or leave a gap)")
            if end - begin != nbytes:
                raise _Damaged(f"corrupt: tensor {_short(key)} ({dtype} {_short(dims)}) spans "
                               f"{end - begin} bytes, expected {nbytes}")
            data_end = end
    except _Damaged as exc:
        return str(exc)
    expected = 8 + header_len + data_end
    if size < expected:
        return f"truncated: {size} bytes on disk, the header describes {expected}"
    if size > expected:
        return f"corrupt: {size - expected} unexpected bytes after the tensor data"
    return None


def _check_torch_file(path: Path, size: int) -> str | None:
    """Return why a torch.save file is unusable, or None. Reads the zip directory and each
    entry's local header, never the tensor data."""
    with path.open("rb") as fh:
        prefix = fh.read(len(_TORCH_LEGACY_PREFIX))
    if prefix == _TORCH_LEGACY_PREFIX:
        return None   # legacy pickle format: no directory to verify, accept as present
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            directory_start = getattr(zf, "start_dir", size)
    # A damaged directory can also hold a name that is not UTF-8 (UnicodeDecodeError, a
    # ValueError), a made-up format version (NotImplementedError) or impossible sizes.
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, NotImplementedError,
            EOFError, OverflowError, struct.error) as exc:
        return ("truncated or corrupt: not a readable zip-format PyTorch checkpoint "
                f"({type(exc).__name__}: {exc})")
    if not any(i.filename.endswith("/data.pkl") or i.filename == "data.pkl" for i in infos):
        return "corrupt: a zip file, but not a PyTorch checkpoint (no data.pkl inside)"
    # Each entry must start with a local file header where the directory says, and its
    # data must end before the directory: bytes lost or changed anywhere shift these.
    with path.open("rb") as fh:
        for info in sorted(infos, key=lambda i: i.header_offset):
            if info.header_offset < 0:
                return f"truncated or corrupt: entry {info.filename!r} lies before the file start"
            if info.header_offset >= directory_start:
                return (f"truncated or corrupt: entry {info.filename!r} lies past the data "
                        f"region ({size} bytes on disk)")
            fh.seek(info.header_offset)
            local = fh.read(30)
            if len(local) < 30 or local[:4] != b"PK\x03\x04":
                return (f"corrupt: entry {info.filename!r} is not where the zip directory "
                        "says (bytes missing or changed)")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            data_end = info.header_offset + 30 + name_len + extra_len + info.compress_size
            if data_end > directory_start:
                return (f"truncated or corrupt: entry {info.filename!r} extends past the data "
                        f"region ({size} bytes on disk)")
    return None


def _check_json(path: Path, size: int) -> str | None:
    """Return why a JSON file (a tokenizer or vocabulary) is unusable, or None."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"corrupt: not UTF-8 text ({exc})"
    try:
        data = _load_json(text, "the file")
    except _Damaged as exc:
        return str(exc)
    if not isinstance(data, dict) and path.name.lower() not in _JSON_ANY_TOP_LEVEL:
        return f"corrupt: the top level is a JSON {type(data).__name__}, not an object"
    return None


def _check_text(path: Path, size: int) -> str | None:
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"corrupt: not UTF-8 text ({exc})"
    return None


_CHECKERS = {
    ".safetensors": _check_safetensors,
    ".pt": _check_torch_file,
    ".pth": _check_torch_file,
    ".json": _check_json,
    ".txt": _check_text,
}


@dataclass
class FileStatus:
    name: str
    required: bool
    present: bool                 # exists on disk (possibly broken)
    size: int | None = None
    problem: str | None = None    # "missing", "truncated: ...", ...

    @property
    def ok(self) -> bool:
        return self.present and self.problem is None

    @property
    def blocks_loading(self) -> bool:
        """A missing required file, or any file that exists but is broken (upstream loads
        optional files such as conds.pt whenever they exist, so a broken one fails too)."""
        return (self.required and not self.ok) or (self.present and self.problem is not None)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def check_file(path: Path, required: bool = True) -> FileStatus:
    """Presence, size and structural integrity of one weight file."""
    name = path.name
    if not path.exists():
        return FileStatus(name, required, False, None, "missing")
    if not path.is_file():
        return FileStatus(name, required, True, None, "not a regular file")
    try:
        size = path.stat().st_size
        if size == 0:
            return FileStatus(name, required, True, 0, "empty (0 bytes)")
        checker = _CHECKERS.get(path.suffix.lower())
        problem = checker(path, size) if checker else None
    except OSError as exc:
        return FileStatus(name, required, True, None, f"unreadable: {exc}")
    return FileStatus(name, required, True, size, problem)


@dataclass
class WeightsStatus:
    variant: str
    label: str
    folder: Path
    files: list[FileStatus] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.broken_files

    @property
    def broken_files(self) -> list[FileStatus]:
        """Files that stop this variant from loading: required ones missing or broken,
        optional ones present but broken."""
        return [f for f in self.files if f.blocks_loading]

    @property
    def any_present(self) -> bool:
        return any(f.present for f in self.files)

    @property
    def total_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files if f.present)

    def to_dict(self) -> dict:
        return {
            "variant": self.variant,
            "label": self.label,
            "folder": str(self.folder),
            "complete": self.complete,
            "total_bytes": self.total_bytes,
            "files": [f.to_dict() for f in self.files],
        }

    def error(self) -> ModelFilesMissing | None:
        """The model_files_missing error for this variant, or None when it is complete."""
        broken = self.broken_files
        if not broken:
            return None
        v = VARIANTS[self.variant]
        listed = "; ".join(f"{f.name} ({f.problem})" for f in broken)
        where = f"{self.folder}"
        if os.environ.get(paths.MODEL_DIR_ENV):
            where += f" (model cache set by {paths.MODEL_DIR_ENV})"
        return ModelFilesMissing(
            f"{v.label}: weight files missing or incomplete in {where}: {listed}.",
            f"Run `{SETUP_COMMAND} --models {self.variant}` to download them "
            f"(about {v.approx_download_gb:g} GB).",
        )


def check_weights(variant: str, model_dir: str | os.PathLike | None = None) -> WeightsStatus:
    """Check every file of a variant in the model cache without loading any tensor.

    `model_dir` overrides CBX_MODEL_DIR, which overrides model_cache/ at the repo root.
    """
    v = get_variant(variant)
    folder = paths.variant_dir(v.name, model_dir)
    files = [check_file(folder / n, True) for n in v.required_files]
    files += [check_file(folder / n, False) for n in v.optional_files]
    return WeightsStatus(v.name, v.label, folder, files)


def require_weights(variant: str, model_dir: str | os.PathLike | None = None) -> Path:
    """Return the variant's folder when its weights are whole; otherwise raise
    ModelFilesMissing naming the missing/broken files, the folder and the fix command."""
    status = check_weights(variant, model_dir)
    err = status.error()
    if err is not None:
        raise err
    return status.folder


# ---------------------------------------------------------------------------------------
# Device and memory
# ---------------------------------------------------------------------------------------

_DEVICE_CHOICES = "'auto', 'cuda', 'cuda:N', 'mps' or 'cpu'"


def _import_torch():
    """Import torch, turning any failure into environment_not_setup with the reason."""
    try:
        import torch
    except Exception as exc:  # a broken install raises many kinds (OSError for DLLs)
        raise EnvironmentNotSetup(
            f"PyTorch cannot be imported: {type(exc).__name__}: {exc}",
            f"Run `{SETUP_COMMAND}` to install PyTorch for this machine, then restart the "
            "kernel.",
        ) from exc
    return torch


def _mps_available(torch) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(requested: str = "auto") -> str:
    """Turn a device request into a concrete torch device string.

    'auto' picks CUDA, then Apple MPS, then CPU. An explicit device that is not available
    fails with invalid_setting and says what to use instead, rather than silently falling
    back (the user asked for it and would otherwise wonder why it is slow).
    """
    req = options.device(requested or "auto")
    torch = _import_torch()
    if req == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if _mps_available(torch):
            return "mps"
        return "cpu"
    if req == "cpu":
        return "cpu"
    if req == "mps":
        if not _mps_available(torch):
            raise InvalidSetting(
                "device='mps' was requested but Apple MPS is not available on this machine.",
                "Use device='auto' or device='cpu'.",
            )
        return "mps"
    if req == "cuda" or req.startswith("cuda:"):
        if not torch.cuda.is_available():
            built = torch.version.cuda is not None
            why = ("no NVIDIA GPU/driver was found" if built
                   else f"the installed PyTorch {torch.__version__} is a CPU-only build")
            raise InvalidSetting(
                f"device={requested!r} was requested but CUDA is not available: {why}.",
                "Use device='auto' or device='cpu'; if this machine has an NVIDIA GPU, "
                f"update its driver and run `{SETUP_COMMAND}` to install a CUDA build of "
                "PyTorch.",
            )
        if req == "cuda":
            return "cuda"
        index_text = req.split(":", 1)[1]
        count = torch.cuda.device_count()
        if not index_text.isdigit() or int(index_text) >= count:
            raise InvalidSetting(
                f"device={requested!r} does not name a GPU on this machine "
                f"({count} CUDA device(s): cuda:0..cuda:{count - 1}).",
                "Use device='cuda' (the first GPU) or device='auto'.",
            )
        return f"cuda:{int(index_text)}"
    raise InvalidSetting(f"Unknown device {requested!r}.", f"Use one of {_DEVICE_CHOICES}.")


# On a CPU, half precision pays only where the CPU multiplies it natively.  cbx's T3
# decode (python -m cbx.dev.bench_decode, 2-core Xeon with AVX512-BF16, AMX and AVX512-FP16):
# bfloat16 10.1 vs float32 8.6 tokens/s (1.17x); the same machine with those
# instructions off (ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2) 6.3 vs 9.1 (0.69x);
# float16 6.6 vs 8.6 (0.77x) even with AVX512-FP16, so float16 needs AMX-FP16.
# dtype -> (PyTorch's probe names, how they are called, speed vs float32 without them)
CPU_HALF_PRECISION = {
    "bfloat16": (("avx512_bf16", "amx_tile"), "AVX512-BF16 or AMX", 0.69),
    "float16": (("amx_fp16",), "AMX-FP16", 0.77),
}


def cpu_has(instruction: str) -> bool:
    """Whether this CPU has `instruction` as PyTorch's own CPU probe sees it (False
    where this PyTorch has no probe for it)."""
    probe = getattr(getattr(_import_torch()._C, "_cpu", None),
                    f"_is_{instruction}_supported", None)
    return bool(probe is not None and probe())


def check_precision(device: str, dtype: str) -> None:
    """Refuse half precision on a CPU that would run it slower than float32 (see
    CPU_HALF_PRECISION): the user asked for speed and would get the opposite."""
    if device != "cpu" or dtype not in CPU_HALF_PRECISION:
        return
    probes, names, speed = CPU_HALF_PRECISION[dtype]
    if any(cpu_has(name) for name in probes):
        return
    raise InvalidSetting(
        f"dtype={dtype!r} on this CPU would be slower than float32: it lacks {names}, "
        f"which {dtype} needs to be fast on a CPU (cbx measured {dtype} decoding at "
        f"{speed:.2f}x of float32's speed without them).",
        "Use dtype='float32' on the CPU; half precision pays on a GPU (device='cuda').")


@dataclass
class DeviceInfo:
    requested: str = "auto"
    resolved: str | None = None          # the device 'requested' maps to, None if unknown
    torch_version: str | None = None
    torch_error: str | None = None       # why torch could not be imported
    cuda_available: bool = False
    cuda_build: str | None = None        # CUDA version torch was built with (None: CPU build)
    cuda_device_count: int = 0
    cuda_device_name: str | None = None
    vram_total_bytes: int | None = None
    vram_used_bytes: int | None = None   # by every process on the GPU
    vram_source: str | None = None       # "torch" or "nvidia-smi"
    torch_allocated_bytes: int | None = None   # by tensors of this process
    torch_reserved_bytes: int | None = None    # held by this process's caching allocator
    mps_available: bool = False
    mps_allocated_bytes: int | None = None
    process_rss_bytes: int | None = None
    ram_total_bytes: int | None = None
    ram_available_bytes: int | None = None
    device_error: str | None = None      # why 'requested' cannot be used
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _nvidia_smi_memory(uuid: str | None) -> tuple[int, int] | None:
    """(total, used) bytes from nvidia-smi, which reads the driver without giving this
    process a CUDA context (a context alone costs a few hundred MB of VRAM)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=uuid,memory.total,memory.used", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
            # no console window flashing up when a Windows kernel asks
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            rows.append((parts[0].lower(), int(parts[1]) * 2**20, int(parts[2]) * 2**20))
    if uuid:
        for row_uuid, total, used in rows:
            if row_uuid.removeprefix("gpu-") == uuid.lower().removeprefix("gpu-"):
                return total, used
    if len(rows) == 1:
        return rows[0][1], rows[0][2]
    return None


def _fill_cuda(info: DeviceInfo, torch, index: int) -> None:
    props = torch.cuda.get_device_properties(index)
    info.cuda_device_name = props.name
    info.vram_total_bytes = int(props.total_memory)
    if torch.cuda.is_initialized():
        info.torch_allocated_bytes = int(torch.cuda.memory_allocated(index))
        info.torch_reserved_bytes = int(torch.cuda.memory_reserved(index))
    else:
        info.torch_allocated_bytes = 0
        info.torch_reserved_bytes = 0
    smi = _nvidia_smi_memory(str(getattr(props, "uuid", "")) or None)
    if smi is not None:
        info.vram_total_bytes, info.vram_used_bytes = smi
        info.vram_source = "nvidia-smi"
    elif torch.cuda.is_initialized():
        free, total = torch.cuda.mem_get_info(index)
        info.vram_total_bytes, info.vram_used_bytes = int(total), int(total - free)
        info.vram_source = "torch"
    else:
        info.notes.append("VRAM in use by other programs is unknown (nvidia-smi not found "
                          "and CUDA is not initialised in this process yet).")


def _fill_ram(info: DeviceInfo) -> None:
    try:
        import psutil
    except ImportError:
        info.notes.append("psutil is not installed: process and system RAM are unknown.")
        return
    info.process_rss_bytes = int(psutil.Process().memory_info().rss)
    vm = psutil.virtual_memory()
    info.ram_total_bytes, info.ram_available_bytes = int(vm.total), int(vm.available)


def device_info(requested: str = "auto") -> DeviceInfo:
    """Device that `requested` resolves to, GPU name and memory, process and system RAM.

    Never raises for a missing or broken torch: that is reported in the result.
    """
    info = DeviceInfo(requested=requested)
    try:
        _fill_torch(info, requested)
    finally:
        _fill_ram(info)   # last, so the figure includes torch itself once imported
    return info


def _fill_torch(info: DeviceInfo, requested: str) -> None:
    if importlib.util.find_spec("torch") is None:
        info.torch_error = "No module named 'torch'"
        return
    try:
        torch = _import_torch()
    except EnvironmentNotSetup as exc:
        info.torch_error = exc.message.removeprefix("PyTorch cannot be imported: ")
        return
    info.torch_version = torch.__version__
    info.cuda_build = torch.version.cuda
    info.cuda_available = bool(torch.cuda.is_available())
    info.mps_available = _mps_available(torch)
    try:
        info.resolved = resolve_device(requested)
    except CbxError as exc:
        info.device_error = exc.message
    if info.cuda_available:
        info.cuda_device_count = int(torch.cuda.device_count())
        index = int(info.resolved.split(":")[1]) if (info.resolved or "").startswith("cuda:") \
            else 0
        _fill_cuda(info, torch, index)
    if info.mps_available:
        info.mps_allocated_bytes = int(torch.mps.current_allocated_memory())


# ---------------------------------------------------------------------------------------
# The status report
# ---------------------------------------------------------------------------------------

def fmt_bytes(n: int | None) -> str:
    """Human-readable size (binary units), '?' when unknown."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


_MODEL_KEY_ORDER = ("state", "variant", "device", "dtype", "loaded_at", "load_seconds", "voice")


@dataclass
class StatusReport:
    model_dir: Path
    libraries: list[LibraryStatus]
    weights: dict[str, WeightsStatus]
    device: DeviceInfo
    model: dict | None = None     # the model manager's describe().to_dict(), None outside a kernel
    created_at: str = field(
        default_factory=lambda: _dt.datetime.now().astimezone().isoformat(timespec="seconds"))

    @property
    def libraries_ok(self) -> bool:
        return all(lib.importable for lib in self.libraries)

    @property
    def complete_variants(self) -> list[str]:
        return [name for name, w in self.weights.items() if w.complete]

    @property
    def ok(self) -> bool:
        """Usable: every library imports, at least one variant's weights are whole, and
        the device asked about can be used (a READY for it would be a lie)."""
        return self.libraries_ok and bool(self.complete_variants) and \
            not self.device.device_error

    def problems(self) -> list[CbxError]:
        """The taxonomy errors that apply now, each with its code, message and fix.

        A variant whose folder is entirely absent is only a problem when no variant is
        complete (downloading just one is normal); a partly present folder always is,
        because it is an interrupted download that a load would trip over.
        """
        found: list[CbxError] = []
        missing = [lib for lib in self.libraries if not lib.importable]
        if missing:
            found.append(_libraries_error(missing))
        partial = [w for w in self.weights.values() if not w.complete and w.any_present]
        found += [w.error() for w in partial]
        if not self.complete_variants and not partial:
            found.append(self._nothing_downloaded_error())
        if self.device.device_error:
            found.append(InvalidSetting(self.device.device_error,
                                        "Use device='auto' or device='cpu'."))
        return found

    def _nothing_downloaded_error(self) -> ModelFilesMissing:
        default = VARIANTS[DEFAULT_VARIANT]
        where = str(self.model_dir)
        if os.environ.get(paths.MODEL_DIR_ENV):
            where += f" (set by {paths.MODEL_DIR_ENV})"
        return ModelFilesMissing(
            f"No model weights found in {where}; expected one sub-folder per variant "
            f"({', '.join(VARIANTS)}).",
            f"Run `{SETUP_COMMAND} --models {default.name}` to download {default.label} "
            f"(about {default.approx_download_gb:g} GB), or name another variant; if the "
            f"weights are elsewhere, set {paths.MODEL_DIR_ENV} to that folder.",
        )

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "created_at": self.created_at,
            "python": sys.version.split()[0],
            "executable": sys.executable,
            "model_dir": str(self.model_dir),
            "libraries": [lib.to_dict() for lib in self.libraries],
            "weights": {name: w.to_dict() for name, w in self.weights.items()},
            "device": self.device.to_dict(),
            "model": dict(self.model) if self.model is not None else None,
            "problems": [p.to_dict() for p in self.problems()],
        }

    # -- rendering ------------------------------------------------------------------------
    # ASCII only: the Windows console's default code page cannot print check marks.

    def _device_lines(self) -> list[str]:
        d = self.device
        if d.torch_error:
            return [f"  PyTorch not importable: {d.torch_error}"]
        lines = [f"  PyTorch {d.torch_version} "
                 f"({'CUDA ' + d.cuda_build if d.cuda_build else 'CPU-only build'}); "
                 f"device {d.requested!r} -> {d.resolved or 'unavailable'}"]
        if d.device_error:
            lines.append(f"  ! {d.device_error}")
        if d.cuda_available:
            lines.append(f"  GPU: {d.cuda_device_name}, VRAM {fmt_bytes(d.vram_used_bytes)} used "
                         f"of {fmt_bytes(d.vram_total_bytes)}; this process: "
                         f"{fmt_bytes(d.torch_allocated_bytes)} allocated, "
                         f"{fmt_bytes(d.torch_reserved_bytes)} reserved")
        else:
            lines.append("  GPU: no CUDA device")
        if d.mps_available:
            lines.append(f"  Apple MPS available, {fmt_bytes(d.mps_allocated_bytes)} allocated")
        return lines

    def _model_items(self) -> list[tuple[str, str]]:
        if not self.model:
            return []
        keys = [k for k in _MODEL_KEY_ORDER if k in self.model]
        keys += [k for k in self.model if k not in _MODEL_KEY_ORDER]
        out = []
        for k in keys:
            value = self.model[k]
            if k == "load_seconds" and isinstance(value, (int, float)):
                value = f"{value:.1f} s"
            elif isinstance(value, int) and k.endswith("bytes"):
                value = fmt_bytes(value)
            elif isinstance(value, dict):
                value = ", ".join(f"{sk}={sv}" for sk, sv in value.items())
            out.append((k, "-" if value is None else str(value)))
        return out

    def __str__(self) -> str:
        lines = [f"Chatterbox Studio status ({self.created_at}): "
                 f"{'READY' if self.ok else 'NOT READY'}", "", "Libraries:"]
        for lib in self.libraries:
            mark = "ok     " if lib.importable else "MISSING"
            extra = "" if lib.importable else f"  ({lib.error})"
            lines.append(f"  {mark} {lib.distribution:<16} {lib.version or '-'}{extra}")
        lines += ["", f"Model weights in {self.model_dir}:"]
        for w in self.weights.values():
            state = "complete" if w.complete else ("INCOMPLETE" if w.any_present else "not downloaded")
            lines.append(f"  {w.variant:<13} {state:<15} {fmt_bytes(w.total_bytes):>10}  {w.label}")
            if w.any_present:
                for f in w.files:
                    if f.ok:
                        lines.append(f"      ok      {f.name} ({fmt_bytes(f.size)})")
                    elif f.present or f.required:
                        lines.append(f"      {'BROKEN ' if f.present else 'MISSING'} {f.name}: {f.problem}")
        lines += ["", "Device:"] + self._device_lines()
        d = self.device
        lines.append(f"  RAM: this process {fmt_bytes(d.process_rss_bytes)}, system "
                     f"{fmt_bytes(d.ram_available_bytes)} free of {fmt_bytes(d.ram_total_bytes)}")
        lines += [f"  note: {n}" for n in d.notes]
        lines += ["", "Loaded model:"]
        items = self._model_items()
        if items:
            lines += [f"  {k}: {v}" for k, v in items]
        else:
            lines.append("  (no model information: not asked from a kernel's model manager)"
                         if self.model is None else "  none")
        problems = self.problems()
        if problems:
            lines += ["", "Problems:"]
            for p in problems:
                lines.append(f"  [{p.code}] {p.message}")
                lines.append(f"      fix: {p.solution}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        e = html.escape
        rows = []

        def row(label: str, value: str, bad: bool = False) -> None:
            color = "color:#b00020;" if bad else ""
            rows.append(f"<tr><th style='text-align:left'>{e(label)}</th>"
                        f"<td style='text-align:left;{color}'>{value}</td></tr>")

        missing = [lib for lib in self.libraries if not lib.importable]
        row("Libraries", "all installed" if not missing else
            "missing: " + e(", ".join(lib.distribution for lib in missing)), bool(missing))
        for w in self.weights.values():
            if w.complete:
                text = f"complete, {e(fmt_bytes(w.total_bytes))}"
            elif not w.any_present:
                text = "not downloaded"
            else:
                text = "; ".join(f"{e(f.name)}: {e(f.problem or '')}" for f in w.broken_files)
            row(f"Weights: {w.label}", text, not w.complete and w.any_present)
        row("Device", "<br>".join(e(line.strip()) for line in self._device_lines()),
            bool(self.device.torch_error or self.device.device_error))
        d = self.device
        row("RAM", e(f"process {fmt_bytes(d.process_rss_bytes)}; system "
                     f"{fmt_bytes(d.ram_available_bytes)} free of {fmt_bytes(d.ram_total_bytes)}"))
        items = self._model_items()
        row("Loaded model", ", ".join(f"{e(k)}={e(v)}" for k, v in items) if items else "none")
        for p in self.problems():
            row(p.code, f"{e(p.message)}<br><b>Fix:</b> {e(p.solution)}", True)
        head = (f"<b>Chatterbox Studio: {'ready' if self.ok else 'not ready'}</b> "
                f"<small>({e(self.created_at)}, models in {e(str(self.model_dir))})</small>")
        return f"<div>{head}<table>{''.join(rows)}</table></div>"


def status(model_dir: str | os.PathLike | None = None, model_state: dict | None = None,
           device: str = "auto", import_modules: bool = False) -> StatusReport:
    """Everything a user needs to know before and after loading, in one report.

    `model_state` is the model manager's describe().to_dict(); this layer does not import the
    manager itself. If torch is found but fails to import, that failure is folded into the
    library list, so a broken PyTorch is not reported as installed.
    """
    libraries = check_libraries(import_modules=import_modules)
    weights = {name: check_weights(name, model_dir) for name in VARIANTS}
    dev = device_info(device)
    if dev.torch_error:
        for lib in libraries:
            if lib.name == "torch" and lib.importable:
                lib.importable, lib.error = False, dev.torch_error
    return StatusReport(
        model_dir=paths.model_dir(model_dir),
        libraries=libraries,
        weights=weights,
        device=dev,
        model=model_state,
    )
