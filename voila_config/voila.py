"""Voila settings for Chatterbox Studio (read by `python -m cbx.ui`, or by
`voila --Voila.config_file_paths=voila_config ...`, or with JUPYTER_CONFIG_PATH=voila_config).

Why each setting:
- bind to this machine only, and answer only requests addressed to it: the page can
  upload files and run a model, so it must not be reachable from the network, nor from
  a web page that rebinds its own host name to 127.0.0.1 (a page that addresses
  127.0.0.1 itself is refused by `python -m cbx.ui`'s cross-site guard,
  cbx/ui/guard_http.py, which no setting here can add);
- 100 MiB websocket messages: an uploaded clip travels in one widget message and the
  voice library accepts clips up to 50 MB (tornado's default cap is 10 MiB);
- cull idle kernels: Voila does not reliably stop a kernel when its tab closes, and a
  kernel can hold the GPU. A kernel with no browser connected and no activity for
  CBX_KERNEL_CULL_MINUTES (default 60; 0 disables) is shut down, which frees all its
  memory. The in-kernel idle auto-unload (CBX_IDLE_UNLOAD_MINUTES, default 15) frees
  the model sooner even while a tab stays open;
- at most CBX_MAX_KERNELS kernels (default 4) alive or starting: every page load starts
  one, so a page that reloads in a loop (or a web site that loads it in frames) would
  otherwise fill the memory. Past the cap the page load answers 503, a page that says
  how to free one (cbx/ui/guard_http.py).
"""
import sys
from pathlib import Path

c = get_config()  # noqa: F821 - provided by traitlets when it runs this file

# the settings' one reader and validator; this file also runs outside `python -m cbx.ui`
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cbx import envsettings  # noqa: E402
from cbx.errors import InvalidSetting  # noqa: E402

try:
    port = envsettings.port()
    cull_minutes = envsettings.kernel_cull_minutes()
    max_kernels = envsettings.max_kernels()
except InvalidSetting as exc:     # stop the start: Voila would drop this whole file
    raise SystemExit(f"{exc.message} {exc.solution}") from None

c.Voila.ip = "127.0.0.1"
c.Voila.port = port
c.Voila.tornado_settings = {
    "websocket_max_message_size": 100 * 1024 * 1024,
    # Voila turns jupyter_server's Host check off; turned back on, the page, the API
    # and the kernel websocket answer 403 to any Host but a loopback address or
    # "localhost", which defeats DNS rebinding (a foreign site's name resolving to
    # 127.0.0.1 carries its own name in Host).
    "allow_remote_access": False,
    "local_hostnames": ["localhost"],
    # No other page may show the dashboard in a frame (jupyter_server's default allows
    # its own origin; nothing here needs that).
    "headers": {"Content-Security-Policy": "frame-ancestors 'none'"},
}
c.MappingKernelManager.cull_idle_timeout = int(cull_minutes * 60)
c.MappingKernelManager.cull_interval = 60 if cull_minutes >= 2 else 10
c.MappingKernelManager.cull_connected = False   # an open tab keeps its session
c.MappingKernelManager.cull_busy = False
c.VoilaConfiguration.multi_kernel_manager_class = "cbx.ui.guard_http.CappedKernelManager"
c.CappedKernelManager.max_kernels = max_kernels

c.VoilaConfiguration.show_tracebacks = False    # errors are shown by the page itself
c.VoilaConfiguration.theme = "light"
