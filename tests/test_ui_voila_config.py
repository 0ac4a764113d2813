"""The shipped Voila configuration: localhost only, 50 MB uploads fit, idle kernels are
culled after a configurable time; and the launcher passes it to Voila."""
from __future__ import annotations

import pytest
from traitlets.config.loader import PyFileConfigLoader

from cbx.ui.__main__ import CONFIG_DIR, DEFAULT_NOTEBOOK, voila_argv


def _load(monkeypatch, **env):
    for key in ("CBX_KERNEL_CULL_MINUTES", "CBX_PORT"):
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


def test_cull_time_and_port_come_from_the_environment(monkeypatch):
    config = _load(monkeypatch, CBX_KERNEL_CULL_MINUTES="5", CBX_PORT="9000")
    assert config.MappingKernelManager.cull_idle_timeout == 300
    assert config.Voila.port == 9000
    assert _load(monkeypatch, CBX_KERNEL_CULL_MINUTES="0") \
        .MappingKernelManager.cull_idle_timeout == 0


def test_bad_cull_time_is_explained(monkeypatch):
    with pytest.raises(SystemExit, match="CBX_KERNEL_CULL_MINUTES"):
        _load(monkeypatch, CBX_KERNEL_CULL_MINUTES="soon")


def test_launcher_arguments():
    argv = voila_argv(port=9123, open_browser=False)
    assert f"--Voila.config_file_paths={CONFIG_DIR}" in argv
    assert "--port=9123" in argv and "--no-browser" in argv
    assert argv[-1] == str(DEFAULT_NOTEBOOK)
    assert DEFAULT_NOTEBOOK.is_file()
