#!/usr/bin/env bash
# Install the Debian packages qvlm needs, only those missing. Usage: scripts/deps.sh [build|test]
#   build: compiler, cmake and the libraries;  test: also clang (fuzzers, LeakSanitizer runtime),
#   Node.js/npm (fetching the real Qwen3 tokenizer, the OpenAI client test) and Chromium (web UI test).
set -euo pipefail
mode=${1:-build}
pkgs=(build-essential cmake pkg-config ca-certificates
      libjansson-dev libpcre2-dev libutf8proc-dev libjpeg62-turbo-dev libpng-dev libwebp-dev
      libxxhash-dev libmicrohttpd-dev libsodium-dev)
if [ "$mode" = test ]; then
  pkgs+=(clang libclang-rt-14-dev nodejs npm curl python3 chromium chromium-driver)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm may come from NodeSource rather than Debian's package; accept any working npm.
if [ "$mode" = test ] && command -v npm >/dev/null 2>&1; then
  tmp=(); for p in "${missing[@]}"; do [ "$p" = npm ] || [ "$p" = nodejs ] || tmp+=("$p"); done
  missing=("${tmp[@]+"${tmp[@]}"}")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "qvlm: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
