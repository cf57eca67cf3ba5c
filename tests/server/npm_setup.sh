#!/usr/bin/env bash
# Install the server tests' Node packages (tests/server/package.json) into DEST (in the build
# tree, which git ignores): the official `openai` client and `playwright-core` (driving the
# system Chromium). Idempotent; several ctest runs may share DEST, so it installs in a temp dir
# and renames. Usage: tests/server/npm_setup.sh DEST
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=$1
if [ -f "$dest/node_modules/.qvlm-ok" ] && cmp -s "$here/package.json" "$dest/package.json"; then
  echo "npm_setup: $dest up to date"
  exit 0
fi
command -v npm >/dev/null || { echo "npm_setup: npm is required (scripts/deps.sh test)" >&2; exit 1; }
mkdir -p "$(dirname "$dest")"
tmp=$(mktemp -d "$dest.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp "$here/package.json" "$tmp/"
(cd "$tmp" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
touch "$tmp/node_modules/.qvlm-ok"
rm -rf "$dest.old" && { [ -d "$dest" ] && mv "$dest" "$dest.old" || true; }
mv "$tmp" "$dest" && rm -rf "$dest.old"
trap - EXIT
echo "npm_setup: installed into $dest"
