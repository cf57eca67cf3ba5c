#!/usr/bin/env bash
# tokenizer_cli_test.sh QVLM FIXTURES: the tokenize / detokenize / bench-tokenizer commands on
# the tiny-dense fixture. Expected ids are those of tests/fixtures/tiny-dense/tokenizer_reference.json.
set -uo pipefail
qvlm=$1; model=$2/tiny-dense/model
fail=0
check() { # check NAME GOT WANT
  if [ "$2" != "$3" ]; then echo "FAIL $1: got '$2', want '$3'"; fail=1; else echo "ok $1"; fi
}

check "tokenize" "$(printf 'Hello world' | "$qvlm" tokenize --model "$model")" "[598,594]"
check "tokenize --tokenizer" "$(printf 'Hello  world   ' | "$qvlm" tokenize --tokenizer "$model/tokenizer.json")" \
      "[598,220,594,585,220]"
check "tokenize --jsonl" "$(printf '"Hello world"\n\n"\\n\\n\\n"\n' | "$qvlm" tokenize --jsonl --model "$model")" \
      "$(printf '[598,594]\n[198,198,198]')"
text=$(printf 'Gr\xc3\xbc\xc3\x9fe \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 <|im_start|>user\n<think>x</think>')
check "round trip" "$(printf '%s' "$text" | "$qvlm" tokenize --model "$model" | "$qvlm" detokenize --model "$model")" "$text"
check "detokenize --jsonl" "$(printf '[598,594]\n[198,1000]\n' | "$qvlm" detokenize --jsonl --model "$model")" \
      "$(printf '"Hello world"\n"\\n<|im_start|>"')"

# Errors: bad id and bad input exit 1 with a message naming the problem; usage errors exit 2.
msg=$(printf '[1, 99999]' | "$qvlm" detokenize --model "$model" 2>&1 >/dev/null); rc=$?
check "bad id exit" "$rc" 1
case "$msg" in *"ids[1] = 99999"*) echo "ok bad id message";; *) echo "FAIL bad id message: $msg"; fail=1;; esac
printf '"a"\n[1]\n' | "$qvlm" tokenize --jsonl --model "$model" >/dev/null 2>&1; check "jsonl not a string" "$?" 1
printf 'x' | "$qvlm" tokenize --model /nonexistent >/dev/null 2>&1; check "missing model" "$?" 1
"$qvlm" tokenize >/dev/null 2>&1; check "usage" "$?" 2

# The benchmark: deterministic text of the requested size, and a JSON report.
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$qvlm" bench-tokenizer --dump-text "$tmp/a.txt" --bytes 5000 && "$qvlm" bench-tokenizer --dump-text "$tmp/b.txt" --bytes 5000
size=$(wc -c < "$tmp/a.txt")
[ "$size" -le 5000 ] && [ "$size" -gt 4996 ]; check "bench text size ($size bytes)" "$?" 0
cmp -s "$tmp/a.txt" "$tmp/b.txt"; check "bench text deterministic" "$?" 0
out=$("$qvlm" bench-tokenizer --model "$model" --bytes 20000 --reps 1 --threads 2 --json --dump-ids "$tmp/ids.json")
case "$out" in *'"encode_warm_mb_s": '[0-9]*) echo "ok bench json";; *) echo "FAIL bench json: $out"; fail=1;; esac
check "bench ids = tokenize" "$("$qvlm" bench-tokenizer --dump-text "$tmp/c.txt" --bytes 20000; "$qvlm" tokenize --model "$model" < "$tmp/c.txt")" \
      "$(cat "$tmp/ids.json")"
exit $fail
