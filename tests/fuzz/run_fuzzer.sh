#!/usr/bin/env bash
# run_fuzzer.sh BINARY SEED_CORPUS SECONDS: fuzz from a scratch copy of the seed corpus (the
# committed corpus is never modified by a CI run); a crash leaves crash-* files and fails.
set -euo pipefail
bin=$1; seeds=$2; secs=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus"
[ -d "$seeds" ] && cp -r "$seeds"/. "$work/corpus/" 2>/dev/null || true
cd "$work"
"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 corpus
