"""Weight files: present, and whole as far as their formats can tell without loading a
tensor (headers, sizes, zip directories), so checking a 3 GB cache takes milliseconds.

Its own module because setup_env.py checks a download with it on a bare interpreter
(standard library only), and cbx.envcheck's status report and the model manager's
load use the same checks.
"""
from __future__ import annotations

import json
import os
import struct
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import paths
from .errors import SETUP_COMMAND, ModelFilesMissing
from .variants import VARIANTS, get_variant

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
