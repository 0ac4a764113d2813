"""Environment checks: are the libraries installed, are the weight files present and
whole (cbx.weights), which device will be used and how much memory is there; and the
status report that puts them together (`cbx.status()`, `python -m cbx status`).

Layer 2. The dashboard must explain a broken installation, so this module imports
nothing heavy at import time: torch and psutil are imported inside the functions that
need them, and the library check uses import specs and package metadata only.
"""
from __future__ import annotations

import datetime as _dt
import html
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from . import options, paths
from .errors import (SETUP_COMMAND, CbxError, EnvironmentNotSetup, InvalidSetting,
                     ModelFilesMissing)
from .holds import ModelHolds
from .report import CSS_RULES, Row, Section, to_html, to_text
from .units import format_bytes
from .variants import DEFAULT_VARIANT, VARIANTS
from .weights import WeightsStatus, check_weights

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


# dtype="int8" quantizes T3's Linear layers for PyTorch's fbgemm int8 kernels, which need
# AVX2.  cbx's T3 decode (python -m cbx.dev.bench_decode --dtypes int8 --steps 50, 2-core
# AMD EPYC with AVX2 but no AVX512, shared with other jobs): int8 0.63 vs float32 0.28
# tokens/s.  Never measured on other CPUs (ARM, x86 without AVX2) or a GPU, so not
# offered there.
INT8_CPU_PROBE = "avx2"
INT8_SPEEDUP = 2.2


def check_precision(device: str, dtype: str) -> None:
    """Refuse a precision that would not pay where it would run: half precision on a
    CPU that computes it slower than float32 (CPU_HALF_PRECISION), int8 anywhere but a
    CPU where it was measured faster (the user asked for speed and would get the
    opposite, or an untested path)."""
    if dtype == "int8":
        _check_int8(device)
        return
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


def _check_int8(device: str) -> None:
    if device != "cpu":
        raise InvalidSetting(
            f"dtype='int8' runs on the CPU only, and the model would run on {device!r}.",
            "Use device='cpu' with dtype='int8'; on a GPU use dtype='float16' or "
            "'bfloat16' (or 'float32').")
    if not cpu_has(INT8_CPU_PROBE):
        raise InvalidSetting(
            "dtype='int8' needs a CPU with AVX2 (PyTorch's int8 kernels), which this CPU "
            f"lacks; cbx measured int8 decoding at {INT8_SPEEDUP:.1f}x float32's speed only "
            "on CPUs that have it.",
            "Use dtype='float32' on this CPU.")


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

_MODEL_KEY_ORDER = ("state", "variant", "device", "dtype", "loaded_at", "load_seconds", "voice")


@dataclass
class StatusReport:
    model_dir: Path
    libraries: list[LibraryStatus]
    weights: dict[str, WeightsStatus]
    device: DeviceInfo
    model: dict | None = None     # the model manager's describe().to_dict(), None outside a kernel
    holders: list = field(default_factory=list)   # other processes' hold records (cbx.holds)
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

    # -- the report as rows: report.to_text and report.to_html render them -------------

    def sections(self) -> list[Section]:
        """Everything in the report: the environment, the loaded model, the problems."""
        return self.environment_sections() + [self._model_section(), Section(
            "Problems", tuple(Row(p.code, "problem", p.message, p.solution)
                              for p in self.problems()))]

    def environment_sections(self) -> list[Section]:
        """Libraries, weight files, device and memory: what the page's health panel
        shows (it draws the model from its own live state, and problems as cards)."""
        sections = [self._libraries_section(), self._weights_section(),
                    self._device_section()]
        if self.holders:
            sections.append(self._holders_section())
        return sections

    def _holders_section(self) -> Section:
        """Who else holds a model: the speech server or another tab's kernel, which own
        a GPU until they unload (`python -m cbx deload` asks them to)."""
        return Section("Held by other processes", tuple(
            Row(record["session"], "holds a model",
                f"{record['variant']} on {record['device']} since "
                f"{str(record['since'])[11:19] or record['since']}")
            for record in self.holders))

    def _libraries_section(self) -> Section:
        missing = [lib.distribution for lib in self.libraries if not lib.importable]
        verdict = Row("Missing", "missing", ", ".join(missing)) if missing \
            else Row("Status", "ok", "all installed")
        return Section("Libraries", (verdict, *(
            Row(lib.distribution, "ok", lib.version or "-") if lib.importable else
            Row(lib.distribution, "missing", f"{lib.version or '-'} ({lib.error})")
            for lib in self.libraries)))

    def _weights_section(self) -> Section:
        rows = []
        for w in self.weights.values():
            label = f"{w.label.split(' (')[0]} ({w.variant})"    # the name --models takes
            if w.complete:
                rows.append(Row(label, "complete", format_bytes(w.total_bytes)))
            elif not w.any_present:
                rows.append(Row(label, "not downloaded"))
            else:
                rows.append(Row(label, "incomplete", ", ".join(f.name for f in w.broken_files)))
                rows += [Row(f.name, "broken", f.problem) if f.present else
                         Row(f.name, "missing") for f in w.broken_files]
        return Section("Model files", tuple(rows))

    def _device_section(self) -> Section:
        d = self.device
        rows = []
        if d.torch_error:
            rows.append(Row("PyTorch", "broken", f"not importable: {d.torch_error}"))
        else:
            build = f"CUDA {d.cuda_build}" if d.cuda_build else "CPU-only build"
            rows += [Row("PyTorch", "", f"{d.torch_version} ({build})"),
                     Row("Uses", "", f"{d.resolved or 'unavailable'} (asked: {d.requested})")]
            if d.device_error:
                rows.append(Row("Device", "unusable", d.device_error))
            if d.cuda_available:
                rows += [Row("GPU", "", d.cuda_device_name or "CUDA device"),
                         Row("VRAM", "", f"{format_bytes(d.vram_used_bytes)} used of "
                                         f"{format_bytes(d.vram_total_bytes)}"),
                         Row("This process", "", f"{format_bytes(d.torch_allocated_bytes)} "
                             f"allocated, {format_bytes(d.torch_reserved_bytes)} reserved")]
            else:
                rows.append(Row("GPU", "", "none (CPU mode: works, slowly)"))
            if d.mps_available:
                rows.append(Row("Apple MPS", "", f"available, "
                                f"{format_bytes(d.mps_allocated_bytes)} allocated"))
        rows.append(Row("RAM", "", f"this process {format_bytes(d.process_rss_bytes)}; system "
                        f"{format_bytes(d.ram_available_bytes)} free of "
                        f"{format_bytes(d.ram_total_bytes)}"))
        rows += [Row("Note", "", note) for note in d.notes]
        return Section("Device", tuple(rows))

    def _model_section(self) -> Section:
        if self.model is None:
            return Section("Loaded model", (Row("Model", "", "no model information: not "
                                                "asked from a kernel's model manager"),))
        keys = [k for k in _MODEL_KEY_ORDER if k in self.model]
        keys += [k for k in self.model if k not in _MODEL_KEY_ORDER]
        rows = []
        for k in keys:
            value = self.model[k]
            if k == "load_seconds" and isinstance(value, (int, float)):
                value = f"{value:.1f} s"
            elif isinstance(value, int) and k.endswith("bytes"):
                value = format_bytes(value)
            elif isinstance(value, dict):
                value = ", ".join(f"{sk}={sv}" for sk, sv in value.items())
            rows.append(Row(k, "", "-" if value is None else str(value)))
        return Section("Loaded model", tuple(rows) or (Row("Model", "", "none"),))

    def __str__(self) -> str:
        return (f"Chatterbox Studio status ({self.created_at}): "
                f"{'READY' if self.ok else 'NOT READY'}\nModel folder: {self.model_dir}\n"
                + to_text(self.sections()))

    def _repr_html_(self) -> str:
        e = html.escape
        head = (f"<b>Chatterbox Studio: {'ready' if self.ok else 'not ready'}</b> "
                f"<small>({e(self.created_at)}, models in {e(str(self.model_dir))})</small>")
        return (f"<style>{CSS_RULES}</style><div class='cbx-health'>{head}"
                f"{to_html(self.sections())}</div>")


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
        holders=[record for record in ModelHolds().live(prune=False)
                 if record["pid"] != os.getpid()],
    )
