#!/usr/bin/env bash
# restart_test.sh QVLM FIXTURE: the 4-turn conversation twice, in two processes sharing a
# --cache-dir. The second process must resume every turn from disk (turn 4 reuses at least turn
# 3's prompt, encodes no image) and still agree with the reference; a cache directory full of
# garbage must not hurt.
set -euo pipefail
qvlm=$1; fx=$2
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
"$qvlm" verify --reference "$fx" --conversation --cache on --cache-dir "$dir/c" --json > "$dir/a.json"
"$qvlm" verify --reference "$fx" --conversation --cache on --cache-dir "$dir/c" --json > "$dir/b.json"
python3 - "$dir/a.json" "$dir/b.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert a["ok"] and b["ok"], "verify failed"
ta = {t["turn"]: t for t in a["turns"]}
tb = {t["turn"]: t for t in b["turns"]}
assert tb["turn4"]["reused_tokens"] >= ta["turn3"]["prompt_tokens"], (tb["turn4"], ta["turn3"])
assert all(t["images_encoded"] == 0 for t in tb.values()), tb
print("restart: second process reused", [t["reused_tokens"] for t in b["turns"]], "of", [t["prompt_tokens"] for t in b["turns"]])
PY
# Garbage in the cache directory: skipped with a warning, outputs still right.
for f in "$dir"/c/*/*; do printf 'garbage' > "$f"; done
"$qvlm" verify --reference "$fx" --conversation --cache on --cache-dir "$dir/c" 2>"$dir/warn.txt" | tail -1
grep -q "skipping" "$dir/warn.txt"
