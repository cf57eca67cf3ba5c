#!/bin/bash
# gpu_check.sh - everything the CUDA backend must show on a GPU machine, in one go: op tests,
# verify (f32, both fixtures, reference + f64 + conversation), the bf16 precision report,
# compute-sanitizer on verify, and `qvlm bench` on synthesized qwen3.5-0.8b and -9b.
#
#   scripts/gpu_check.sh PAYLOAD_DIR OUT_DIR [steps]
# PAYLOAD_DIR holds bin/qvlm, bin/cuda_ops_test, lib/ (shared libraries the binaries need),
# fx/<fixture>/ and tools/precision_report.py; OUT_DIR gets one log per step and summary.txt.
# steps: a comma list of ops,perf,verify,bf16,sanitize,race,b08,scen,host,front,b9,b35 (default: all but perf
# and b35; b35 needs ~70 GB of free space for the 35B-A3B weights: QVLM_B35_DIR, default /tmp). Each step has its own
# time limit and a failing step does not stop the others.
P=$(cd "$1" && pwd); OUT=$2; STEPS=${3:-ops,verify,bf16,sanitize,race,b08,scen,host,front,b9}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$P/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH}
if ! ldconfig -p | grep -q libcublas.so.13 && [ ! -e /usr/local/cuda/lib64/libcublas.so.13 ]; then
    d=$(dirname "$(find / -name 'libcublas.so.13' -not -path '*/proc/*' 2>/dev/null | head -1)")
    export LD_LIBRARY_PATH=$d:$LD_LIBRARY_PATH
fi
Q=$P/bin/qvlm
S=$OUT/summary.txt
M=/tmp/qvlm-models
has() { [[ ",$STEPS," == *",$1,"* ]]; }
step() { # name limit_s command...
    local name=$1 lim=$2; shift 2
    local t0=$(date +%s%N)
    timeout "$lim" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    printf '%-28s rc=%-3s %6d ms\n' "$name" "$rc" "$ms" | tee -a "$S"
    return $rc
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv | tee -a "$S"
mkdir -p $M
if has b9; then ( $Q synth --preset qwen3.5-9b --out $M/9b > "$OUT/synth9b.log" 2>&1; touch $M/9b.done ) & fi
if has b08; then ( $Q synth --preset qwen3.5-0.8b --out $M/08b > "$OUT/synth08.log" 2>&1; touch $M/08b.done ) & fi

if has ops; then step ops 180 env QVLM_CUDA_STATS=1 $P/bin/cuda_ops_test; fi
if has perf; then
    step perf 300 env QVLM_CUDA_PERF=1 $P/bin/cuda_ops_test
    grep "^perf" "$OUT/perf.log" >> "$S"
fi
if has verify; then
    for fx in tiny-dense tiny-moe; do
        step verify-$fx 120 $Q verify --reference $P/fx/$fx --backend cuda --precision f32
        step verify-$fx-f64 120 $Q verify --reference $P/fx/$fx --backend cuda --precision f32 --rope-freq f32
        step verify-$fx-conv 180 env QVLM_CUDA_STATS=1 $Q verify --reference $P/fx/$fx --backend cuda --precision f32 --conversation
        grep -E "FAIL|cached_vs" "$OUT/verify-$fx.log" "$OUT/verify-$fx-f64.log" "$OUT/verify-$fx-conv.log" | head -20 >> "$S"
    done
fi
if has bf16; then
    for fx in tiny-dense tiny-moe; do
        step bf16-$fx 120 $Q verify --reference $P/fx/$fx --backend cuda --precision bf16 --rope-freq f32 --dump "$OUT/$fx-cuda-bf16.st"
        python3 $P/tools/precision_report.py $P/fx/$fx "$OUT/$fx-cuda-bf16.st" cuda-bf16 > "$OUT/bf16-report-$fx.txt" 2>&1
        grep ALL "$OUT/bf16-report-$fx.txt" | sed "s/^/$fx /" >> "$S"
        rm -f "$OUT/$fx-cuda-bf16.st"
    done
fi
if has sanitize; then
    CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
    for fx in tiny-dense tiny-moe; do
        step memcheck-$fx 240 $CS --tool memcheck --leak-check full --error-exitcode 99 $Q verify --reference $P/fx/$fx --backend cuda --precision f32
        tail -3 "$OUT/memcheck-$fx.log" >> "$S"
    done
    step initcheck-dense 240 $CS --tool initcheck --error-exitcode 99 $Q verify --reference $P/fx/tiny-dense --backend cuda --precision f32
    tail -2 "$OUT/initcheck-dense.log" >> "$S"
fi
if has race; then
    CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
    step racecheck-dense 150 $CS --tool racecheck --error-exitcode 99 $Q verify --reference $P/fx/tiny-dense --backend cuda --precision f32
    tail -2 "$OUT/racecheck-dense.log" >> "$S"
fi
bench() { # tag dir full(1: also without graphs and a per-op profile)
    local tag=$1 dir=$2 full=$3
    for i in $(seq 600); do [ -e $dir.done ] && break; sleep 1; done
    tail -1 "$OUT/synth$tag.log" >> "$S"
    step bench-$tag 300 env QVLM_CUDA_STATS=1 $Q bench --model $dir --backend cuda --prompt 512,4096 --gen 128 --reps 3 --vision 1024x768
    cat "$OUT/bench-$tag.log" >> "$S"
    [ "$full" = 1 ] || return 0
    step bench-$tag-nographs 120 env QVLM_CUDA_GRAPHS=0 $Q bench --model $dir --backend cuda --prompt 512 --gen 128 --reps 2
    grep -E "decode|bound" "$OUT/bench-$tag-nographs.log" | sed 's/^/no graphs: /' >> "$S"
    step bench-$tag-nopdl 120 env QVLM_CUDA_PDL=0 QVLM_CUDA_STATS=1 $Q bench --model $dir --backend cuda --prompt 512 --gen 128 --reps 2
    grep -E "decode|bound|replay" "$OUT/bench-$tag-nopdl.log" | tail -3 | sed 's/^/no pdl: /' >> "$S"
    step profile-$tag 180 env QVLM_CUDA_PROFILE=1 $Q bench --model $dir --backend cuda --prompt 64 --gen 64 --reps 1
    grep "cuda profile" "$OUT/profile-$tag.log" | sort -k7 -n -r | head -14 >> "$S"
}
if has b08; then bench 08 $M/08b 1; fi
if has scen; then # the cross-turn cache scenarios on the GPU (0.8B shapes)
    for i in $(seq 600); do [ -e $M/08b.done ] && break; sleep 1; done
    for sc in multiturn interleaved edit reimage tailedit; do
        step scen-$sc 240 $Q bench --model $M/08b --backend cuda --scenario $sc
        grep -E '"(ttft|speedup|reused|images_encoded|turn|cached|uncached|new_only)' "$OUT/scen-$sc.log" | tr -d ' \n' | head -c 1500 >> "$S"; echo >> "$S"
    done
    rm -rf /tmp/qvlm-cache-gpu
    step scen-restart 300 $Q bench --model $M/08b --backend cuda --scenario restart --cache-dir /tmp/qvlm-cache-gpu
    tr -d ' \n' < "$OUT/scen-restart.log" | head -c 1500 >> "$S"; echo >> "$S"
fi
if has host; then # the host-RAM tier: a device budget of ~2 checkpoints, with and without it
    for i in $(seq 600); do [ -e $M/08b.done ] && break; sleep 1; done
    for hg in 0 8; do
        step host-multiturn-$hg 240 $Q bench --model $M/08b --backend cuda --scenario multiturn --cache-gb 0.05 --cache-host-gb $hg
        grep -E "cached .* ms" "$OUT/host-multiturn-$hg.log" | sed "s/^/host $hg GB: /" >> "$S"
    done
    rm -rf /tmp/qvlm-cache-host
    step host-restart 300 $Q bench --model $M/08b --backend cuda --scenario restart --cache-gb 0.05 --cache-host-gb 8 --cache-dir /tmp/qvlm-cache-host
    grep -E "cached .* ms" "$OUT/host-restart.log" | sed "s/^/restart host 8 GB: /" >> "$S"
fi
if has front; then # the front ends on the GPU: one-shot run with an image, and the server
    img=$(ls $P/fx/tiny-dense/images/* | head -1)
    step run-cuda 120 $Q run -m $P/fx/tiny-dense/model --backend cuda --image "$img" -p "Describe it." --max-tokens 8 --temperature 0 --stats
    tail -2 "$OUT/run-cuda.log" >> "$S"
    $Q serve -m $P/fx/tiny-dense/model --backend cuda --port 18080 > "$OUT/serve.log" 2>&1 & sp=$!
    for i in $(seq 60); do curl -sf localhost:18080/health >/dev/null 2>&1 && break; sleep 0.5; done
    step serve-cuda 60 curl -sf localhost:18080/v1/chat/completions -H 'Content-Type: application/json' \
        -d '{"messages":[{"role":"user","content":"hi"}],"max_tokens":8,"temperature":0}'
    head -c 600 "$OUT/serve-cuda.log" >> "$S"; echo >> "$S"
    kill $sp; wait $sp
fi
if has b9; then bench 9b $M/9b ${FULL9:-0}; fi
if has b35; then
    rm -rf $M/9b $M/9b.done
    B35=${QVLM_B35_DIR:-/tmp}/qvlm-35b
    df -h ${QVLM_B35_DIR:-/tmp} | tail -1 >> "$S"
    step synth35 900 $Q synth --preset qwen3.5-35b-a3b --out $B35
    tail -1 "$OUT/synth35.log" >> "$S"
    step bench-35b 400 env QVLM_CUDA_STATS=1 $Q bench --model $B35 --backend cuda --prompt 512,4096 --gen 128 --reps 2 --vision 1024x768
    cat "$OUT/bench-35b.log" | grep -v "cuda stream" >> "$S"
    step scen35-multiturn 300 $Q bench --model $B35 --backend cuda --scenario multiturn
    tr -d ' \n' < "$OUT/scen35-multiturn.log" | head -c 1500 >> "$S"; echo >> "$S"
fi
df -h /tmp | tail -1 >> "$S"
(cd "$OUT" && tar czf logs.tgz --exclude=logs.tgz --exclude=summary.txt *.log *.txt 2>/dev/null && rm -f *.log bf16-report-*.txt)
echo "== summary" && cat "$S"
