"""Compare qvlm's logits (a `qvlm verify --dump` file) and transformers' bf16 logits with
transformers' float64 run, the same way for both, over every position of every prompt.

Usage: python3 tools/precision_report.py FIXTURE_DIR DUMP.safetensors [LABEL]
Reads FIXTURE_DIR/reference_f64.safetensors (NAME.logits_f64, NAME.logits_bf16; made by
tools/ref_precision.py). Run qvlm with --rope-freq f32: the float64 oracle is the
from_pretrained model, whose RoPE frequencies are f32. Prints, per prompt and overall, the max
and mean |logit - f64| and the top-1 agreement with the f64 argmax. Plain Python (no numpy).
"""
import array, json, struct, sys

FMT = {"F64": "d", "F32": "f", "I64": "q"}

def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__" or v["dtype"] not in FMT:
            continue
        s, e = v["data_offsets"]
        a = array.array(FMT[v["dtype"]])
        a.frombytes(b[8 + n + s:8 + n + e])
        out[k] = (a, v["shape"])
    return out

def argmax_rows(a, cols):
    return [max(range(cols), key=lambda j, r=r: a[r * cols + j]) for r in range(len(a) // cols)]

fx, dump = sys.argv[1], sys.argv[2]
label = sys.argv[3] if len(sys.argv) > 3 else "qvlm"
ref, got = load(f"{fx}/reference_f64.safetensors"), load(dump)
tot = {label: [0.0, 0.0, 0, 0, 0], "transformers-bf16": [0.0, 0.0, 0, 0, 0]}  # max, sum, agree, rows, elems
print(f"{'prompt':12s} {'source':18s} {'max|d|':>9s} {'mean|d|':>9s} {'top1':>9s}")
for k in sorted(ref):
    if not k.endswith(".logits_f64"):
        continue
    name = k[: -len(".logits_f64")]
    f64, shape = ref[k]
    cols = shape[-1]
    top = argmax_rows(f64, cols)
    for src, item in ((label, got.get(f"{name}.logits")), ("transformers-bf16", ref.get(f"{name}.logits_bf16"))):
        if item is None:
            continue
        a = item[0]
        if len(a) != len(f64):
            print(f"{name}: {src} has {len(a)} values, f64 {len(f64)}")
            continue
        d = [abs(x - y) for x, y in zip(a, f64)]
        agree = sum(1 for x, y in zip(argmax_rows(a, cols), top) if x == y)
        t = tot[src]
        t[0] = max(t[0], max(d)); t[1] += sum(d); t[2] += agree; t[3] += len(top); t[4] += len(d)
        print(f"{name:12s} {src:18s} {max(d):9.4f} {sum(d) / len(d):9.5f} {agree:4d}/{len(top):<4d}")
for src, t in tot.items():
    if t[3]:
        print(f"{'ALL':12s} {src:18s} {t[0]:9.4f} {t[1] / t[4]:9.5f} {t[2]:4d}/{t[3]:<4d} ({100.0 * t[2] / t[3]:.1f}%)")
