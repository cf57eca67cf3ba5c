#!/usr/bin/env bash
# Build qvlm and run the main job on the bundled tiny models: every image, prompt and greedy
# answer of the fixtures' 4-turn image conversation, checked against transformers' outputs.
# Installs missing Debian packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)"
for fx in tiny-dense tiny-moe; do
  echo "== $fx"
  ./build/qvlm verify --reference "tests/fixtures/$fx"
done
