"""Environment checks on temporary model caches made of tiny but structurally valid files:
the integrity checks must tell whole files from missing, truncated and garbage ones
without loading tensors, and every failure must name the file and the fix."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cbx import envcheck, paths, weights
from cbx.errors import EnvironmentNotSetup, InvalidSetting, ModelFilesMissing
from cbx.variants import VARIANTS

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

REPO = Path(__file__).resolve().parent.parent


def write_file(path: Path, kind_seed: int = 0) -> None:
    """A tiny valid file of the type its extension says."""
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(kind_seed)
    if path.suffix == ".safetensors":
        safetensors_torch.save_file({"layer.weight": torch.randn(4, 3, generator=g),
                                     "layer.bias": torch.zeros(3, dtype=torch.float16),
                                     "steps": torch.arange(5)}, str(path))
    elif path.suffix == ".pt":
        torch.save({"w": torch.randn(2, 2, generator=g), "meta": {"n": 1}}, path)
    elif path.suffix == ".json":
        path.write_text(json.dumps({"model": {"vocab": {"a": 0, "b": 1}}}), encoding="utf-8")
    else:
        path.write_text("#version: 0.2\na b\n", encoding="utf-8")


def make_variant(root: Path, variant: str, optional: bool = True) -> Path:
    v = VARIANTS[variant]
    folder = root / variant
    for i, name in enumerate(v.required_files + (v.optional_files if optional else ())):
        write_file(folder / name, i)
    return folder


def problem_of(status: weights.WeightsStatus, name: str) -> str | None:
    return next(f.problem for f in status.files if f.name == name)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_complete_variant(tmp_path, variant):
    folder = make_variant(tmp_path, variant)
    status = weights.check_weights(variant, tmp_path)
    assert status.folder == folder.resolve()
    assert status.complete, [(f.name, f.problem) for f in status.files]
    assert [f.name for f in status.files] == list(VARIANTS[variant].all_files)
    for f in status.files:
        assert f.ok and f.size == (folder / f.name).stat().st_size > 0
    assert weights.require_weights(variant, tmp_path) == folder.resolve()


def test_missing_optional_file_is_fine_missing_required_is_named(tmp_path):
    make_variant(tmp_path, "original", optional=False)
    assert weights.check_weights("original", tmp_path).complete   # no conds.pt: fine
    (tmp_path / "original" / "t3_cfg.safetensors").unlink()
    status = weights.check_weights("original", tmp_path)
    assert not status.complete
    assert [f.name for f in status.broken_files] == ["t3_cfg.safetensors"]
    assert problem_of(status, "t3_cfg.safetensors") == "missing"


@pytest.mark.parametrize("cut", [1, 40, "into_header"])
def test_truncated_safetensors_is_named_truncated(tmp_path, cut):
    make_variant(tmp_path, "original")
    path = tmp_path / "original" / "s3gen.safetensors"
    data = path.read_bytes()
    keep = 20 if cut == "into_header" else len(data) - cut
    path.write_bytes(data[:keep])
    status = weights.check_weights("original", tmp_path)
    assert not status.complete
    assert [f.name for f in status.broken_files] == ["s3gen.safetensors"]
    assert problem_of(status, "s3gen.safetensors").startswith("truncated")


def test_safetensors_with_trailing_bytes_or_bad_header(tmp_path):
    make_variant(tmp_path, "original")
    folder = tmp_path / "original"
    (folder / "ve.safetensors").write_bytes((folder / "ve.safetensors").read_bytes() + b"xx")
    # A header length that is plausible but points at bytes that are not JSON.
    (folder / "t3_cfg.safetensors").write_bytes((16).to_bytes(8, "little") + b"\xff" * 40)
    status = weights.check_weights("original", tmp_path)
    assert "unexpected bytes" in problem_of(status, "ve.safetensors")
    assert "JSON" in problem_of(status, "t3_cfg.safetensors")
    assert {f.name for f in status.broken_files} == {"ve.safetensors", "t3_cfg.safetensors"}


def test_safetensors_tensor_size_must_match_shape(tmp_path):
    header = json.dumps({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 8)
    assert "expected 16" in weights.check_file(path).problem


def write_safetensors(path: Path, header, data_len: int = 8, header_len: int | None = None) -> None:
    """A safetensors file with the given header (a JSON value, or raw text sent as is)
    followed by `data_len` zero bytes; `header_len` overrides the length prefix."""
    raw = (header if isinstance(header, str) else json.dumps(header)).encode("utf-8")
    size = len(raw) if header_len is None else header_len
    path.write_bytes(size.to_bytes(8, "little") + raw + b"\0" * data_len)


def one_tensor(**changes) -> dict:
    """A valid one-tensor header (F32, shape [2], bytes 0..8) with some fields changed."""
    entry = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    entry.update(changes)
    return {"x": entry}


def raw_tensor(field: str, json_text: str) -> str:
    """The one-tensor header as JSON text with one field's value written verbatim (for
    values json.dumps would not write: Infinity, NaN, 5000-digit numbers)."""
    entry = {"dtype": '"F32"', "shape": "[2]", "data_offsets": "[0, 8]", field: json_text}
    return '{"x": {' + ", ".join(f'"{k}": {v}' for k, v in entry.items()) + "}}"


DEEP = "[" * 100_000 + "]" * 100_000          # RecursionError inside json.loads


def assert_named_model_files_missing(tmp_path: Path, variant: str, name: str) -> str:
    """The variant is incomplete because of `name` alone, and every way of asking says
    so with model_files_missing, the file name and the download command."""
    status = weights.check_weights(variant, tmp_path)
    assert not status.complete
    assert [f.name for f in status.broken_files] == [name]
    problem = problem_of(status, name)
    assert problem and problem.startswith(("corrupt", "truncated")), problem
    err = status.error()
    assert err.code == "model_files_missing"
    assert f"{name} ({problem})" in err.message
    assert f"python setup_env.py --models {variant}" in err.solution
    with pytest.raises(ModelFilesMissing) as info:
        weights.require_weights(variant, tmp_path)
    assert name in info.value.message
    return problem


# Headers the old reader crashed on (TypeError, ValueError, OverflowError,
# RecursionError) or accepted although the safetensors loader rejects them.
DAMAGED_HEADERS = {
    "shape_not_a_list": (one_tensor(shape="ab"), 8, "shape"),
    "shape_of_strings": (one_tensor(shape=["a", "b"]), 8, "dimension"),
    "shape_negative": (one_tensor(shape=[-1, -2]), 8, "dimension"),   # product 2 * 4 = 8
    "shape_float": (one_tensor(shape=[2.0]), 8, "dimension"),
    "shape_5000_digit_number": (raw_tensor("shape", "[" + "9" * 5000 + "]"), 8, "JSON"),
    "dtype_unknown": (one_tensor(dtype="Q99"), 8, "dtype"),
    "dtype_not_a_string": (one_tensor(dtype=["F32"]), 8, "dtype"),
    "offsets_float": (one_tensor(data_offsets=[0.0, 8.0]), 8, "offset"),
    "offsets_bool": (one_tensor(data_offsets=[False, 8]), 8, "offset"),
    "offsets_infinity": (raw_tensor("data_offsets", "[0, Infinity]"), 8, "Infinity"),
    "tensors_overlap": ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                         "y": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}},
                        8, "overlap"),
    "tensors_leave_a_gap": (one_tensor(data_offsets=[4, 12]), 12, "gap"),
    "metadata_not_strings": ({"__metadata__": {"format": 1}, **one_tensor()}, 8,
                             "__metadata__"),
    "deeply_nested_header": (DEEP, 0, "nested too deeply"),
    "deeply_nested_entry": ('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}", 0,
                            "nested too deeply"),
}


@pytest.mark.parametrize("case", list(DAMAGED_HEADERS))
def test_damaged_safetensors_header_is_model_files_missing(tmp_path, case):
    header, data_len, why = DAMAGED_HEADERS[case]
    make_variant(tmp_path, "original")
    write_safetensors(tmp_path / "original" / "t3_cfg.safetensors", header, data_len)
    problem = assert_named_model_files_missing(tmp_path, "original", "t3_cfg.safetensors")
    assert why in problem


# Malformed headers the old reader already reported; kept so the validating reader
# that replaced it goes on reporting them.
MALFORMED_HEADERS = {
    "header_not_an_object": ([], 0, {}),
    "entry_not_an_object": ({"x": "abc"}, 8, {}),
    "offsets_missing": ({"x": {"dtype": "F32", "shape": [2]}}, 8, {}),
    "offsets_not_two": (one_tensor(data_offsets=[0, 4, 8]), 8, {}),
    "offsets_out_of_order": (one_tensor(data_offsets=[8, 0]), 8, {}),
    "offsets_disagree_with_shape": (one_tensor(data_offsets=[0, 800]), 800, {}),
    "offsets_beyond_the_file": (one_tensor(shape=[200], data_offsets=[0, 800]), 8, {}),
    "shape_product_huge": (one_tensor(shape=[10**6, 10**6]), 8, {}),
    "shape_product_overflows_u64": (one_tensor(shape=[2**40, 2**40],
                                               data_offsets=[0, 2**63]), 8, {}),
    "dimension_above_u64": (one_tensor(shape=[2**64]), 8, {}),
    "shape_nan": (raw_tensor("shape", "[NaN]"), 8, {}),
    "header_length_beyond_the_file": (one_tensor(), 8, {"header_len": 10**6}),
    "header_length_implausible": (one_tensor(), 8, {"header_len": 2**63}),
}


@pytest.mark.parametrize("case", list(MALFORMED_HEADERS))
def test_malformed_safetensors_header_is_model_files_missing(tmp_path, case):
    header, data_len, kw = MALFORMED_HEADERS[case]
    make_variant(tmp_path, "original")
    write_safetensors(tmp_path / "original" / "ve.safetensors", header, data_len, **kw)
    assert_named_model_files_missing(tmp_path, "original", "ve.safetensors")


def test_valid_edge_case_safetensors_headers_are_accepted(tmp_path):
    # What the safetensors loader accepts must not be called damaged: scalars, empty
    # tensors, tensors listed out of offset order, string metadata, padding spaces.
    path = tmp_path / "ok.safetensors"
    header = {"__metadata__": {"format": "pt"},
              "b": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [8, 16]},
              "a": {"dtype": "I64", "shape": [], "data_offsets": [0, 8]},
              "e": {"dtype": "F32", "shape": [0, 5], "data_offsets": [16, 16]}}
    write_safetensors(path, json.dumps(header) + "    ", 16)
    assert weights.check_file(path).ok, weights.check_file(path).problem
    write_safetensors(path, {}, 0)
    assert weights.check_file(path).ok


DAMAGED_JSON = {
    "deeply_nested": (DEEP, "nested too deeply"),
    "deeply_nested_inside_an_object": ('{"model": ' + "[" * 100_000 + "]" * 100_000 + "}",
                                       "nested too deeply"),
    "a_list_not_an_object": ("[1, 2]", "not an object"),
    "a_string_not_an_object": ('"tokenizer"', "not an object"),
    "nan": ('{"model": NaN}', "NaN"),
    "5000_digit_number": ('{"model": ' + "9" * 5000 + "}", "JSON"),
}


@pytest.mark.parametrize("case", list(DAMAGED_JSON))
def test_damaged_tokenizer_json_is_model_files_missing(tmp_path, case):
    text, why = DAMAGED_JSON[case]
    make_variant(tmp_path, "original")
    (tmp_path / "original" / "tokenizer.json").write_text(text, encoding="utf-8")
    problem = assert_named_model_files_missing(tmp_path, "original", "tokenizer.json")
    assert why in problem


def test_cangjie_table_may_be_a_list(tmp_path):
    # Upstream reads Cangjie5_TC.json as a list of "word\tcode" strings.
    make_variant(tmp_path, "multilingual")
    (tmp_path / "multilingual" / "Cangjie5_TC.json").write_text('["a\\tb"]', encoding="utf-8")
    assert weights.check_weights("multilingual", tmp_path).complete


def _damage_zip_directory(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    at = data.index(b"PK\x01\x02")                        # first central directory entry
    if how == "name_not_utf8":
        data[at + 9] |= 0x08                              # flag bit 11: the name is UTF-8
        data[at + 46] = 0xFF                              # ...but it is not
    else:                                                 # "made_up_version"
        data[at + 6] = 0xFF                               # needs zip version 25.5
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["name_not_utf8", "made_up_version"])
def test_pt_with_a_damaged_zip_directory_is_named(tmp_path, how):
    # zipfile raises UnicodeDecodeError / NotImplementedError for these, not BadZipFile.
    make_variant(tmp_path, "multilingual")
    _damage_zip_directory(tmp_path / "multilingual" / "s3gen.pt", how)
    problem = assert_named_model_files_missing(tmp_path, "multilingual", "s3gen.pt")
    assert "zip" in problem


def test_garbage_and_truncated_pt_are_named(tmp_path):
    make_variant(tmp_path, "multilingual")
    folder = tmp_path / "multilingual"
    (folder / "ve.pt").write_bytes(os.urandom(4096))
    data = (folder / "s3gen.pt").read_bytes()
    (folder / "s3gen.pt").write_bytes(data[: len(data) // 2])
    status = weights.check_weights("multilingual", tmp_path)
    assert {f.name for f in status.broken_files} == {"ve.pt", "s3gen.pt"}
    assert "zip" in problem_of(status, "ve.pt")
    assert "zip" in problem_of(status, "s3gen.pt")


@pytest.mark.parametrize("cut_at", [100, 1000, 5000])
def test_pt_with_bytes_missing_in_the_middle_is_named(tmp_path, cut_at):
    # The zip directory at the end survives, but every entry after the gap has moved.
    path = tmp_path / "s3gen.pt"
    torch.save({"a": torch.randn(1000), "b": torch.randn(1000)}, path)
    assert weights.check_file(path).ok
    data = path.read_bytes()
    path.write_bytes(data[:cut_at] + data[cut_at + 500:])
    status = weights.check_file(path)
    assert status.present and not status.ok
    assert "corrupt" in status.problem


def test_pt_with_an_overwritten_entry_header_is_named(tmp_path):
    path = tmp_path / "ve.pt"
    torch.save({"a": torch.randn(1000), "b": torch.randn(1000)}, path)
    with zipfile.ZipFile(path) as zf:
        offset = zf.infolist()[-1].header_offset
    data = bytearray(path.read_bytes())
    data[offset:offset + 4] = b"\0\0\0\0"
    path.write_bytes(bytes(data))
    assert "not where the zip directory says" in weights.check_file(path).problem


def test_zip_that_is_not_a_torch_checkpoint(tmp_path):
    path = tmp_path / "conds.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    assert "data.pkl" in weights.check_file(path, required=False).problem


def test_broken_optional_file_blocks_loading(tmp_path):
    # Upstream loads conds.pt whenever it exists, so a broken one would fail the load.
    make_variant(tmp_path, "turbo")
    (tmp_path / "turbo" / "conds.pt").write_bytes(b"not a checkpoint")
    status = weights.check_weights("turbo", tmp_path)
    assert not status.complete
    assert [f.name for f in status.broken_files] == ["conds.pt"]


def test_bad_json_empty_file_and_directory(tmp_path):
    make_variant(tmp_path, "turbo")
    folder = tmp_path / "turbo"
    (folder / "vocab.json").write_text('{"a": 1', encoding="utf-8")
    (folder / "merges.txt").write_bytes(b"")
    (folder / "ve.safetensors").unlink()
    (folder / "ve.safetensors").mkdir()
    status = weights.check_weights("turbo", tmp_path)
    assert "not valid JSON" in problem_of(status, "vocab.json")
    assert problem_of(status, "merges.txt") == "empty (0 bytes)"
    assert problem_of(status, "ve.safetensors") == "not a regular file"


def test_require_weights_error_names_files_folder_and_fix(tmp_path):
    make_variant(tmp_path, "original")
    folder = tmp_path / "original"
    (folder / "tokenizer.json").unlink()
    data = (folder / "ve.safetensors").read_bytes()
    (folder / "ve.safetensors").write_bytes(data[:-3])
    with pytest.raises(ModelFilesMissing) as info:
        weights.require_weights("original", tmp_path)
    err = info.value
    assert err.code == "model_files_missing"
    assert "tokenizer.json (missing)" in err.message
    assert "ve.safetensors (truncated" in err.message
    assert "t3_cfg.safetensors" not in err.message     # whole files are not blamed
    assert str(folder.resolve()) in err.message
    assert "python setup_env.py --models original" in err.solution
    assert err.to_dict()["error"] == "model_files_missing"


def test_unknown_variant_is_an_invalid_setting(tmp_path):
    with pytest.raises(InvalidSetting):
        weights.check_weights("nope", tmp_path)


def test_model_dir_env_var_and_argument_override(tmp_path, monkeypatch):
    env_root, arg_root = tmp_path / "env", tmp_path / "arg"
    make_variant(env_root, "original")
    arg_root.mkdir()
    monkeypatch.setenv(paths.MODEL_DIR_ENV, str(env_root))
    assert weights.check_weights("original").complete
    assert weights.check_weights("original").folder == (env_root / "original").resolve()
    overridden = weights.check_weights("original", arg_root)
    assert not overridden.complete
    assert overridden.folder == (arg_root / "original").resolve()
    with pytest.raises(ModelFilesMissing) as info:
        weights.require_weights("original", arg_root)
    assert str(arg_root.resolve()) in info.value.message
    monkeypatch.delenv(paths.MODEL_DIR_ENV)
    assert weights.check_weights("original").folder == paths.REPO_ROOT / "model_cache" / "original"


# --- libraries ----------------------------------------------------------------------


def test_installed_libraries_have_versions():
    libs = {lib.name: lib for lib in envcheck.check_libraries()}
    assert set(libs) == {name for name, _ in envcheck.REQUIRED_LIBRARIES}
    assert libs["torch"].importable and libs["torch"].version == torch.__version__.split("+")[0]
    assert libs["chatterbox"].distribution == "chatterbox-tts"
    assert libs["chatterbox"].version   # found through the distribution name


def test_missing_library_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(envcheck, "REQUIRED_LIBRARIES",
                        envcheck.REQUIRED_LIBRARIES + (("cbx_no_such_lib", "cbx-no-such-lib"),))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "soundfile" else real_find_spec(name, *a))
    libs = {lib.name: lib for lib in envcheck.check_libraries()}
    assert not libs["cbx_no_such_lib"].importable and libs["cbx_no_such_lib"].version is None
    assert "No module named 'soundfile'" == libs["soundfile"].error
    assert libs["numpy"].importable
    with pytest.raises(EnvironmentNotSetup) as info:
        envcheck.require_libraries()
    err = info.value
    assert err.code == "environment_not_setup"
    assert "cbx-no-such-lib" in err.message and "soundfile" in err.message
    assert "numpy" not in err.message
    assert "python setup_env.py" in err.solution
    envcheck.require_libraries(["numpy", "torch"])   # a subset that is there passes

    make_variant(tmp_path, "original")
    report = envcheck.status(model_dir=tmp_path)
    assert report.complete_variants == ["original"]
    assert not report.ok
    assert [p.code for p in report.problems()] == ["environment_not_setup"]
    assert re.search(r"MISSING +cbx-no-such-lib +- \(No module named", str(report))


def test_deep_check_catches_a_package_that_fails_to_import(tmp_path, monkeypatch):
    pkg = tmp_path / "cbx_broken_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise OSError('DLL load failed')\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    libs = [("cbx_broken_pkg", "cbx-broken-pkg")]
    assert envcheck.check_libraries(libraries=libs)[0].importable    # spec exists
    deep = envcheck.check_libraries(import_modules=True, libraries=libs)[0]
    assert not deep.importable and deep.error == "OSError: DLL load failed"
    sys.modules.pop("cbx_broken_pkg", None)


# --- device -------------------------------------------------------------------------


def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert envcheck.resolve_device("auto") == expected
    assert envcheck.resolve_device(" CPU ") == "cpu"
    with pytest.raises(InvalidSetting) as info:
        envcheck.resolve_device("tpu")
    assert "'auto'" in info.value.solution


def test_half_precision_on_a_cpu_needs_the_cpu_to_compute_it(monkeypatch):
    """bfloat16 on a CPU without AVX512-BF16/AMX (and float16 without AMX-FP16) would
    decode slower than float32, so it is refused with the fix; with them it is allowed,
    and a GPU is never asked."""
    present: set[str] = set()
    monkeypatch.setattr(envcheck, "cpu_has", lambda name: name in present)
    for dtype in ("bfloat16", "float16"):
        with pytest.raises(InvalidSetting) as info:
            envcheck.check_precision("cpu", dtype)
        assert "slower than float32" in info.value.message and dtype in info.value.message
        assert "dtype='float32'" in info.value.solution
        envcheck.check_precision("cuda", dtype)
        envcheck.check_precision("cuda:1", dtype)
    envcheck.check_precision("cpu", "float32")
    present.add("amx_tile")
    envcheck.check_precision("cpu", "bfloat16")
    present.clear()
    present.add("avx512_bf16")
    envcheck.check_precision("cpu", "bfloat16")
    with pytest.raises(InvalidSetting):
        envcheck.check_precision("cpu", "float16")        # AVX512-FP16 is not enough
    present.add("amx_fp16")
    envcheck.check_precision("cpu", "float16")


def test_load_refuses_slow_half_precision_and_keeps_what_was_loaded(monkeypatch):
    import cbx
    from cbx.engine.manager import get_manager

    monkeypatch.setattr(envcheck, "cpu_has", lambda name: False)
    before = get_manager().describe()
    with pytest.raises(InvalidSetting) as info:
        cbx.load("original", device="cpu", dtype="bfloat16")
    assert "slower than float32" in info.value.message
    after = get_manager().describe()
    assert (after.state, after.variant, after.dtype) == \
        (before.state, before.variant, before.dtype)


def test_cpu_probe_reads_pytorch_and_knows_no_made_up_instruction():
    assert envcheck.cpu_has("avx2") == torch._C._cpu._is_avx2_supported()
    assert envcheck.cpu_has("no_such_instruction") is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_explicit_cuda_without_cuda_names_the_fix():
    with pytest.raises(InvalidSetting) as info:
        envcheck.resolve_device("cuda")
    assert "CUDA is not available" in info.value.message
    assert "device='cpu'" in info.value.solution
    info_ = envcheck.device_info("cuda:0")
    assert info_.resolved is None and "CUDA is not available" in info_.device_error


def test_device_info_reports_torch_and_memory():
    info = envcheck.device_info()
    assert info.torch_version == torch.__version__
    assert info.resolved == envcheck.resolve_device("auto")
    assert info.cuda_available == torch.cuda.is_available()
    assert info.process_rss_bytes > 50 * 2**20          # torch alone is bigger than this
    assert info.ram_total_bytes >= info.ram_available_bytes > 0
    if info.cuda_available:
        assert info.cuda_device_name and info.vram_total_bytes > 0
    json.dumps(info.to_dict())


def test_device_info_without_torch_reports_instead_of_failing(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real_find_spec(name, *a))
    info = envcheck.device_info()
    assert info.torch_error == "No module named 'torch'" and info.resolved is None
    report = envcheck.status(model_dir=tmp_path)
    assert not report.ok
    assert re.search(r"BROKEN +PyTorch +not importable: No module named 'torch'", str(report))
    codes = [p.code for p in report.problems()]
    assert codes[0] == "environment_not_setup"


# --- the report ---------------------------------------------------------------------


def test_status_report_renders_everything(tmp_path):
    make_variant(tmp_path, "original")
    make_variant(tmp_path, "turbo")
    (tmp_path / "turbo" / "t3_turbo_v1.safetensors").unlink()   # an interrupted download
    model_state = {"state": "ready", "variant": "original", "device": "cpu",
                   "dtype": "float32", "loaded_at": "2026-01-02T03:04:05+00:00",
                   "load_seconds": 14.25, "voice": "alice", "extra_key": 7}
    report = envcheck.status(model_dir=tmp_path, model_state=model_state)
    assert report.ok                                    # original is whole
    problems = report.problems()
    assert [p.code for p in problems] == ["model_files_missing"]
    assert "t3_turbo_v1.safetensors (missing)" in problems[0].message
    assert "--models turbo" in problems[0].solution

    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is True
    assert data["model_dir"] == str(tmp_path.resolve())
    assert set(data["weights"]) == set(VARIANTS)
    assert data["weights"]["original"]["complete"] is True
    assert data["weights"]["multilingual"]["complete"] is False
    assert data["model"]["voice"] == "alice"
    assert data["problems"][0]["error"] == "model_files_missing"

    text = str(report)
    assert "READY" in text and "NOT READY" not in text
    for row in ("variant +original", "load_seconds +14.2 s", "voice +alice", "extra_key +7",
                "MISSING +t3_turbo_v1.safetensors$", "INCOMPLETE +Chatterbox-Turbo \\(turbo\\) +"
                "t3_turbo_v1.safetensors$", "complete +Chatterbox \\(original\\) +[0-9.]+ KiB$",
                "not downloaded +Chatterbox-Multilingual \\(multilingual\\)$",
                "PROBLEM +model_files_missing +Chatterbox-Turbo", "fix: Run `python setup_env.py"):
        assert re.search(row, text, re.MULTILINE), row
    text.encode("ascii")                                  # printable on a Windows console

    page = report._repr_html_()
    assert "<div class='cbx-health'>" in page and ".cbx-bad { color: #b00020" in page
    assert "<th>voice</th><td>alice</td>" in page
    assert "<th>t3_turbo_v1.safetensors</th><td><span class='cbx-bad'>missing</span></td>" \
        in page
    assert "<th>Chatterbox-Multilingual (multilingual)</th><td><span class='cbx-warn'>" \
        "not downloaded</span></td>" in page          # absent, not itemised
    assert "<b>Fix:</b> Run `python setup_env.py --models turbo`" in page


def test_nothing_downloaded_is_one_problem_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.MODEL_DIR_ENV, str(tmp_path))
    report = envcheck.status(model_state={"state": "not_loaded"})
    assert not report.ok
    problems = report.problems()
    assert [p.code for p in problems] == ["model_files_missing"]
    assert str(tmp_path.resolve()) in problems[0].message
    assert paths.MODEL_DIR_ENV in problems[0].message
    assert "python setup_env.py --models original" in problems[0].solution
    assert re.search(r"^  state +not_loaded$", str(report), re.MULTILINE)


def _run_cli(*args: str, model_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{paths.MODEL_DIR_ENV: str(model_dir)})
    return subprocess.run([sys.executable, "-m", "cbx", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)


def test_cli_status_json(tmp_path):
    make_variant(tmp_path, "multilingual")
    proc = _run_cli("status", "--json", model_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) >= {"ok", "model_dir", "libraries", "weights", "device", "model",
                         "problems"}
    assert data["ok"] is True and data["problems"] == [] and data["model"] is None
    assert data["model_dir"] == str(tmp_path.resolve())
    assert {lib["name"] for lib in data["libraries"]} >= {"torch", "chatterbox", "voila"}
    assert all(lib["importable"] for lib in data["libraries"])
    ml = data["weights"]["multilingual"]
    assert ml["complete"] is True
    assert [f["name"] for f in ml["files"]] == list(VARIANTS["multilingual"].all_files)
    assert all(f["size"] > 0 for f in ml["files"])
    assert data["weights"]["original"]["files"][0]["problem"] == "missing"
    assert data["device"]["resolved"] in ("cpu", "cuda", "mps")
    assert data["device"]["process_rss_bytes"] > 0


def test_cli_status_exit_code_and_override(tmp_path):
    make_variant(tmp_path / "full", "original")
    (tmp_path / "empty").mkdir()
    # --model-dir wins over CBX_MODEL_DIR
    proc = _run_cli("status", "--model-dir", str(tmp_path / "empty"), model_dir=tmp_path / "full")
    assert proc.returncode == 1
    assert "NOT READY" in proc.stdout and re.search(r"PROBLEM +model_files_missing ", proc.stdout)
    assert "python setup_env.py --models original" in proc.stdout
    proc = _run_cli("status", model_dir=tmp_path / "full")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "READY" in proc.stdout


def test_cli_status_reports_damaged_weight_files_without_a_traceback(tmp_path):
    make_variant(tmp_path, "original")
    folder = tmp_path / "original"
    write_safetensors(folder / "t3_cfg.safetensors", DEEP, 0)
    write_safetensors(folder / "s3gen.safetensors", one_tensor(shape=["a", "b"]))
    (folder / "tokenizer.json").write_text(DEEP, encoding="utf-8")
    names = ("t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json")

    proc = _run_cli("status", "--json", model_dir=tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert data["ok"] is False and data["weights"]["original"]["complete"] is False
    [problem] = [p for p in data["problems"] if "original" in p["solution"]]
    assert problem["error"] == "model_files_missing"
    assert all(name in problem["message"] for name in names), problem["message"]
    assert "python setup_env.py --models original" in problem["solution"]

    proc = _run_cli("status", model_dir=tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1
    assert re.search(r"PROBLEM +model_files_missing ", proc.stdout)
    assert all(re.search(rf"BROKEN +{name} +corrupt", proc.stdout) for name in names), \
        proc.stdout


def test_cli_without_command_shows_help():
    from cbx.__main__ import main

    assert main([]) == 2


def test_cli_status_refuses_a_device_that_names_none(tmp_path, capsys):
    """Issue 21 item 8: `--device bogus` exited 0 and said READY."""
    from cbx.__main__ import main

    make_variant(tmp_path, "original")
    assert main(["status", "--device", "bogus", "--model-dir", str(tmp_path)]) == 16
    out, err = capsys.readouterr()
    assert "READY" not in out
    assert "error [invalid_setting]: device='bogus' is not a device name." in err
    assert "'cpu'" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_status_for_a_device_this_machine_lacks_is_not_ready(tmp_path, capsys):
    from cbx.__main__ import main

    make_variant(tmp_path, "original")
    report = envcheck.status(model_dir=tmp_path, device="cuda")
    assert not report.ok and "NOT READY" in str(report)
    assert [p.code for p in report.problems()] == ["invalid_setting"]
    assert main(["status", "--device", "cuda", "--model-dir", str(tmp_path)]) == 1
    assert "NOT READY" in capsys.readouterr().out
    assert envcheck.status(model_dir=tmp_path, device="cpu").ok
