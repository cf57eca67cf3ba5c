#!/usr/bin/env bash
# Build qvlm and run the main job on the bundled tiny model: verify it against the
# transformers reference outputs. Installs missing Debian packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)"
./build/qvlm version
