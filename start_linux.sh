#!/usr/bin/env bash
# Start Chatterbox Studio on Linux or macOS.
#
# First use: creates the environment and downloads the English model by running
# `python setup_env.py` (run that yourself first for other choices, e.g.
# `python3 setup_env.py --models turbo --cpu`). Then serves the dashboard with Voila and
# the repository's settings (`python -m cbx.ui`) on http://127.0.0.1:8866/.
#
# Arguments are passed to `python -m cbx.ui` (--port N, --no-browser).
# `./start_linux.sh serve [--port N] [--host H]` starts the OpenAI-compatible speech
# server (`python -m cbx serve`, http://127.0.0.1:8880/v1) instead of the dashboard.
# Environment: CBX_PORT (port), CBX_NO_BROWSER=1 (never open a browser); without a
# display (no DISPLAY / WAYLAND_DISPLAY on Linux) no browser is opened.
# Stop with Ctrl+C: that ends the kernel and frees the GPU.
set -u
cd "$(dirname "$0")" || exit 1

has_voila() {
    "$1" -c "import importlib.util as u, sys; sys.exit(u.find_spec('voila') is None)" \
        >/dev/null 2>&1
}

pick_python() {
    # A Python that can build the environment (3.10-3.12), else any python3 so that
    # setup_env.py can say what to install.
    local c
    for c in python3.11 python3.12 python3.10 python3 python; do
        if command -v "$c" >/dev/null 2>&1 && "$c" -c \
            'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 12)))' \
            >/dev/null 2>&1; then
            echo "$c"; return 0
        fi
    done
    for c in python3 python; do
        if command -v "$c" >/dev/null 2>&1; then echo "$c"; return 0; fi
    done
    return 1
}

ENV_PY=.venv_chatterbox/bin/python
if ! { [ -x "$ENV_PY" ] && has_voila "$ENV_PY"; }; then
    if ! SYS_PY=$(pick_python); then
        echo "Python 3.10-3.12 is needed to set up Chatterbox Studio and none was found." >&2
        echo "Debian/Ubuntu: sudo apt install python3.11 python3.11-venv;" \
             "macOS: brew install python@3.11" >&2
        exit 2
    fi
    if ! ENV_PY=$("$SYS_PY" setup_env.py --where 2>/dev/null); then
        echo "First run: setting up the environment with $SYS_PY setup_env.py ..."
        "$SYS_PY" setup_env.py
        rc=$?
        case $rc in
            0) ;;
            4|5) echo "The weights are not complete (see above); starting anyway:" \
                      "the dashboard shows what is missing." ;;
            *) echo "Setup failed (exit code $rc); the messages above say why." >&2
               exit $rc ;;
        esac
        if ! ENV_PY=$("$SYS_PY" setup_env.py --where); then
            echo "Setup finished but no environment with Voila was found." >&2
            exit 3
        fi
    fi
fi

if [ "${1:-}" = "serve" ]; then
    shift
    echo "(Python: $ENV_PY. Press Ctrl+C here to stop the server; that also frees the GPU.)"
    exec "$ENV_PY" -m cbx serve "$@"
fi

PORT=${CBX_PORT:-8866}
prev=""
for arg in "$@"; do       # show the port the user asked for
    case $arg in --port=*) PORT=${arg#--port=} ;; esac
    [ "$prev" = "--port" ] && PORT=$arg
    prev=$arg
done

NO_BROWSER=""
if [ "${CBX_NO_BROWSER:-0}" = "1" ]; then
    NO_BROWSER="--no-browser"
elif [ "$(uname -s)" = "Linux" ] && [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
    NO_BROWSER="--no-browser"   # headless: nothing to open a browser on
fi

echo "Chatterbox Studio: http://127.0.0.1:${PORT}/"
echo "(Python: $ENV_PY. Press Ctrl+C here to stop it; that also frees the GPU.)"
# shellcheck disable=SC2086  # NO_BROWSER is empty or one word
exec "$ENV_PY" -m cbx.ui $NO_BROWSER "$@"
