#!/bin/bash
# llamacpp_compare.sh - qvlm bench and llama.cpp's llama-bench on this machine, the same model
# shapes (synthesized qwen3.5-0.8b), the same threads, interleaved, so that both see the same
# memory bandwidth (on the shared VM it moves by 2x within minutes). Not part of the tests.
#
#   scripts/llamacpp_compare.sh QVLM_BINARY WORK_DIR [rounds=3] [threads=2]
#
# llama.cpp's source comes from the npm package node-llama-cpp (llama/gitRelease.bundle, a git
# bundle of the llama.cpp release it wraps; the npm registry is reachable where GitHub is not).
# It is built with native flags (llama-bench, llama-quantize), the checkpoint is copied into a
# bf16 GGUF by tools/gguf_from_checkpoint.py and quantised to Q8_0 by llama-quantize. Each round
# runs, in order: qvlm bf16, llama.cpp bf16, qvlm q8_0, llama.cpp q8_0 (prompt 512, 128
# generated tokens, 3 repetitions each). Results: WORK_DIR/cmp/<round>.<q|l>.<bf16|q8>.json.
set -e
Q=$(realpath "$1"); W=$2; ROUNDS=${3:-3}; TH=${4:-2}
NLC=3.22.1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$W" && cd "$W"
if [ ! -x llama.cpp/build/bin/llama-bench ] || [ ! -x llama.cpp/build/bin/llama-quantize ]; then
    [ -f node-llama-cpp-$NLC.tgz ] || npm pack -q node-llama-cpp@$NLC
    tar xzf node-llama-cpp-$NLC.tgz package/llama/gitRelease.bundle
    rm -rf llama.cpp && git clone -q package/llama/gitRelease.bundle llama.cpp
    cmake -S llama.cpp -B llama.cpp/build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF > cmake.log
    cmake --build llama.cpp/build -j"$(nproc)" --target llama-bench llama-quantize > build.log
fi
PY=python3 # numpy: the interpreter's own, else Debian's python3-numpy for /usr/bin/python3
if ! $PY -c 'import numpy' 2>/dev/null; then
    PY=/usr/bin/python3
    $PY -c 'import numpy' 2>/dev/null || { [ "$(id -u)" = 0 ] || S=sudo; $S apt-get install -y python3-numpy > /dev/null; }
fi
[ -f q08/config.json ] || "$Q" synth --preset qwen3.5-0.8b --out q08
[ -f q08-bf16.gguf ] || $PY "$ROOT/tools/gguf_from_checkpoint.py" q08 q08-bf16.gguf llama.cpp
[ -f q08-q8_0.gguf ] || llama.cpp/build/bin/llama-quantize q08-bf16.gguf q08-q8_0.gguf Q8_0 > quantize.log 2>&1
L=llama.cpp/build/bin/llama-bench
mkdir -p cmp
for i in $(seq 1 "$ROUNDS"); do
    uptime > cmp/$i.load
    "$Q" bench --model q08 --threads "$TH" --precision bf16 --prompt 512 --gen 128 --reps 3 --vision none --json > cmp/$i.q.bf16.json
    $L -m q08-bf16.gguf -t "$TH" -p 512 -n 128 -r 3 -o json > cmp/$i.l.bf16.json 2> /dev/null
    "$Q" bench --model q08 --threads "$TH" --precision bf16 --quant q8_0 --prompt 512 --gen 128 --reps 3 --vision none --json > cmp/$i.q.q8.json
    $L -m q08-q8_0.gguf -t "$TH" -p 512 -n 128 -r 3 -o json > cmp/$i.l.q8.json 2> /dev/null
    python3 - "$i" <<'EOF'
import json, sys
i = sys.argv[1]
for kind in ('bf16', 'q8'):
    q = json.load(open(f'cmp/{i}.q.{kind}.json'))
    l = {('pp' if x['n_prompt'] else 'tg'): x['avg_ts'] for x in json.load(open(f'cmp/{i}.l.{kind}.json'))}
    print(f"round {i} {kind:4s}: prefill qvlm {q['prefill_tok_s']:7.1f} llama.cpp {l['pp']:7.1f} | decode qvlm "
          f"{q['decode_tok_s']:6.2f} llama.cpp {l['tg']:6.2f} tok/s | read {q['read_bandwidth_gbs']:.1f} GB/s, "
          f"decode bound {q['decode_bound_tok_s']:.1f} tok/s")
EOF
done
