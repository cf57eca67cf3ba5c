#!/usr/bin/env python3
"""Measure Hugging Face `tokenizers` on the same text `qvlm bench-tokenizer` uses.

The text is qvlm's: 1 MiB of deterministic mixed-language text that
`qvlm bench-tokenizer --dump-text FILE` writes (pass it with --text, or let this script run
qvlm with --qvlm BIN). The numbers mean what qvlm's mean: load time of tokenizer.json, and
encode(text, add_special_tokens=False) throughput in MB/s (10^6 bytes of text per second),
first call (cold cache) and best of --reps (warm). HF encodes one string on one thread.

With --compare-ids FILE (from `qvlm bench-tokenizer --dump-ids FILE`) it also checks that
qvlm's ids are identical to HF's and reports the first difference.

    qvlm bench-tokenizer --tokenizer tokenizer.json --dump-text text.txt --dump-ids ids.json
    python3 tools/bench_hf_tokenizers.py --tokenizer tokenizer.json --text text.txt \
        --compare-ids ids.json

Requires: pip install tokenizers
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def fnv1a_ids(ids):
    """FNV-1a 64 over the ids' little-endian int32 bytes, as qvlm prints it."""
    h = 0xCBF29CE484222325
    for i in ids:
        for k in range(4):
            h = ((h ^ ((i >> (8 * k)) & 0xFF)) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def get_text(args):
    if args.text:
        with open(args.text, "rb") as f:
            return f.read()
    if not args.qvlm:
        sys.exit("need --text FILE (from `qvlm bench-tokenizer --dump-text FILE`) or --qvlm BIN")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "text.txt")
        subprocess.run([args.qvlm, "bench-tokenizer", "--dump-text", path, "--bytes", str(args.bytes)],
                       check=True)
        with open(path, "rb") as f:
            return f.read()


def compare(ids, path):
    with open(path) as f:
        theirs = json.load(f)
    if theirs == ids:
        return {"ids_identical": True}
    first = next((i for i, (a, b) in enumerate(zip(ids, theirs)) if a != b), min(len(ids), len(theirs)))
    return {"ids_identical": False, "first_difference": first, "hf_ids_there": ids[first:first + 8],
            "qvlm_ids_there": theirs[first:first + 8], "hf_n_ids": len(ids), "qvlm_n_ids": len(theirs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", required=True, help="tokenizer.json")
    ap.add_argument("--text", help="text file from qvlm bench-tokenizer --dump-text")
    ap.add_argument("--qvlm", help="qvlm binary, to generate the text when --text is not given")
    ap.add_argument("--bytes", type=int, default=1 << 20, help="text size when generating (default 1 MiB)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--compare-ids", help="ids from qvlm bench-tokenizer --dump-ids, to check equality")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    import tokenizers
    from tokenizers import Tokenizer

    raw = get_text(args)
    text = raw.decode("utf-8")
    t0 = time.perf_counter()
    tok = Tokenizer.from_file(args.tokenizer)
    load_ms = (time.perf_counter() - t0) * 1e3

    t0 = time.perf_counter()
    ids = tok.encode(text, add_special_tokens=False).ids
    cold = time.perf_counter() - t0
    warm = float("inf")
    for _ in range(args.reps):
        t0 = time.perf_counter()
        tok.encode(text, add_special_tokens=False)
        warm = min(warm, time.perf_counter() - t0)

    mb = len(raw) / 1e6
    out = {"library": "tokenizers " + tokenizers.__version__, "tokenizer": args.tokenizer,
           "text_bytes": len(raw), "n_ids": len(ids), "ids_fnv1a": "%016x" % fnv1a_ids(ids),
           "load_ms": round(load_ms, 1), "encode_cold_mb_s": round(mb / cold, 2),
           "encode_warm_mb_s": round(mb / warm, 2)}
    if args.compare_ids:
        out.update(compare(ids, args.compare_ids))
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print("%-18s %s" % (k, v))
    if args.compare_ids and not out["ids_identical"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
