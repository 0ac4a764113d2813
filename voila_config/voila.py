"""Voila settings for Chatterbox Studio (read by `python -m cbx.ui`, or by
`voila --Voila.config_file_paths=voila_config ...`, or with JUPYTER_CONFIG_PATH=voila_config).

Why each setting:
- bind to this machine only: the page can upload files and run a model, so it must
  not be reachable from the network;
- 100 MiB websocket messages: an uploaded clip travels in one widget message and the
  voice library accepts clips up to 50 MB (tornado's default cap is 10 MiB);
- cull idle kernels: Voila does not reliably stop a kernel when its tab closes, and a
  kernel can hold the GPU. A kernel with no browser connected and no activity for
  CBX_KERNEL_CULL_MINUTES (default 60; 0 disables) is shut down, which frees all its
  memory. The in-kernel idle auto-unload (CBX_IDLE_UNLOAD_MINUTES, default 15) frees
  the model sooner even while a tab stays open.
"""
import os

c = get_config()  # noqa: F821 - provided by traitlets when it runs this file


def _minutes(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        return max(float(raw), 0.0) if raw else default
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a number of minutes (use e.g. 60, or 0 "
                         "to disable)") from None


c.Voila.ip = "127.0.0.1"
c.Voila.port = int(os.environ.get("CBX_PORT", "8866"))
c.Voila.tornado_settings = {"websocket_max_message_size": 100 * 1024 * 1024}

cull_minutes = _minutes("CBX_KERNEL_CULL_MINUTES", 60.0)
c.MappingKernelManager.cull_idle_timeout = int(cull_minutes * 60)
c.MappingKernelManager.cull_interval = 60 if cull_minutes >= 2 else 10
c.MappingKernelManager.cull_connected = False   # an open tab keeps its session
c.MappingKernelManager.cull_busy = False

c.VoilaConfiguration.show_tracebacks = False    # errors are shown by the page itself
c.VoilaConfiguration.theme = "light"
