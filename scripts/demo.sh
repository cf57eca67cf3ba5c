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
  echo "== $fx: the same conversation through the cross-turn cache (cached vs uncached, reuse per turn)"
  ./build/qvlm verify --reference "tests/fixtures/$fx" --conversation
done
