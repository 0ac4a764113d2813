"""The shipped Voila configuration: localhost only, 50 MB uploads fit, idle kernels are
culled after a configurable time, at most CBX_MAX_KERNELS kernels; and the launcher
passes it to Voila."""
from __future__ import annotations

import pytest
from traitlets.config.loader import PyFileConfigLoader

from cbx.ui.__main__ import CONFIG_DIR, DEFAULT_NOTEBOOK, voila_argv


def _load(monkeypatch, **env):
    for key in ("CBX_KERNEL_CULL_MINUTES", "CBX_PORT", "CBX_MAX_KERNELS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return PyFileConfigLoader("voila.py", path=str(CONFIG_DIR)).load_config()


def test_defaults(monkeypatch):
    config = _load(monkeypatch)
    assert config.Voila.ip == "127.0.0.1"
    assert config.Voila.port == 8866
    assert config.Voila.tornado_settings["websocket_max_message_size"] >= 60 * 1024 * 1024
    assert config.MappingKernelManager.cull_idle_timeout == 3600
    assert config.MappingKernelManager.cull_connected is False
    assert config.VoilaConfiguration.show_tracebacks is False
    assert config.VoilaConfiguration.multi_kernel_manager_class == \
        "cbx.ui.guard_http.CappedKernelManager"
    assert config.CappedKernelManager.max_kernels == 4


def test_cull_time_port_and_kernel_cap_come_from_the_environment(monkeypatch):
    config = _load(monkeypatch, CBX_KERNEL_CULL_MINUTES="5", CBX_PORT="9000",
                   CBX_MAX_KERNELS="2")
    assert config.MappingKernelManager.cull_idle_timeout == 300
    assert config.Voila.port == 9000
    assert config.CappedKernelManager.max_kernels == 2
    assert _load(monkeypatch, CBX_KERNEL_CULL_MINUTES="0") \
        .MappingKernelManager.cull_idle_timeout == 0


def test_bad_cull_time_is_explained(monkeypatch):
    with pytest.raises(SystemExit, match="CBX_KERNEL_CULL_MINUTES"):
        _load(monkeypatch, CBX_KERNEL_CULL_MINUTES="soon")


@pytest.mark.parametrize("env", [
    {"CBX_PORT": "abc"}, {"CBX_PORT": "0"}, {"CBX_PORT": "70000"}, {"CBX_PORT": "-1"},
    {"CBX_KERNEL_CULL_MINUTES": "nan"}, {"CBX_KERNEL_CULL_MINUTES": "inf"},
    {"CBX_KERNEL_CULL_MINUTES": "-5"},
    {"CBX_MAX_KERNELS": "0"}, {"CBX_MAX_KERNELS": "many"},
])
def test_bad_values_stop_the_config_instead_of_being_dropped(monkeypatch, env):
    """Issue 15 (10): Voila drops a config file that fails, losing the upload cap and
    culling with it; a bad value must stop the start, naming the variable."""
    with pytest.raises(SystemExit, match=next(iter(env))):
        _load(monkeypatch, **env)


@pytest.mark.parametrize("name,value", [
    ("CBX_IDLE_UNLOAD_MINUTES", "nan"), ("CBX_IDLE_UNLOAD_MINUTES", "-1"),
    ("CBX_PORT", "abc"), ("CBX_KERNEL_CULL_MINUTES", "nan"), ("CBX_MAX_KERNELS", "0"),
])
def test_launcher_refuses_to_start_with_a_bad_value(name, value, tmp_path):
    """`python -m cbx.ui` names the variable and exits before any server runs."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, **{name: value})
    proc = subprocess.run([sys.executable, "-m", "cbx.ui", "--no-browser", "--port=1"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "invalid_setting" in proc.stderr and name in proc.stderr
    assert "Voil" not in proc.stderr          # the server never started


def test_idle_unload_minutes_rejects_nan_and_negative(monkeypatch):
    from cbx import envsettings
    from cbx.errors import InvalidSetting

    for bad in ("nan", "inf", "-1", "soon"):
        monkeypatch.setenv("CBX_IDLE_UNLOAD_MINUTES", bad)
        with pytest.raises(InvalidSetting, match="CBX_IDLE_UNLOAD_MINUTES"):
            envsettings.idle_unload_minutes()
    monkeypatch.setenv("CBX_IDLE_UNLOAD_MINUTES", "0")
    assert envsettings.idle_unload_minutes() == 0.0


def test_max_kernels_reads_a_whole_number_of_one_or_more(monkeypatch):
    from cbx import envsettings
    from cbx.errors import InvalidSetting

    monkeypatch.delenv("CBX_MAX_KERNELS", raising=False)
    assert envsettings.max_kernels() == 4
    for good, value in (("1", 1), (" 12 ", 12), ("", 4)):
        monkeypatch.setenv("CBX_MAX_KERNELS", good)
        assert envsettings.max_kernels() == value
    for bad in ("0", "-1", "2.5", "nan", "four", "\u00b2", "1e3"):
        monkeypatch.setenv("CBX_MAX_KERNELS", bad)
        with pytest.raises(InvalidSetting, match="CBX_MAX_KERNELS") as raised:
            envsettings.max_kernels()
        assert raised.value.code == "invalid_setting"
        assert "CBX_MAX_KERNELS" in raised.value.solution
    monkeypatch.setenv("CBX_MAX_KERNELS", "0")
    assert [p.code for p in envsettings.server_problems()
            if "CBX_MAX_KERNELS" in p.message] == ["invalid_setting"]


def test_launcher_arguments():
    argv = voila_argv(port=9123, open_browser=False)
    assert f"--Voila.config_file_paths={CONFIG_DIR}" in argv
    assert "--port=9123" in argv and "--no-browser" in argv
    assert argv[-1] == str(DEFAULT_NOTEBOOK)
    assert DEFAULT_NOTEBOOK.is_file()
