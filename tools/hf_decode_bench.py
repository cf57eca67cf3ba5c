"""Peer measurement for `qvlm bench`: transformers' own decode (bf16, its default cache, greedy) of a
Qwen3.5 checkpoint (a `qvlm synth` one, say) on the same GPU.

Usage: python3 tools/hf_decode_bench.py MODEL_DIR PROMPT_TOKENS NEW_TOKENS
Prints (n_new - 1) / (time(n_new tokens) - time(1 token)), best of 3 rounds. Needs torch with CUDA
and transformers with Qwen3.5; without flash-linear-attention and causal-conv1d installed
transformers runs its reference PyTorch DeltaNet and conv (it warns), which is much slower.
"""
import sys, time, torch
from transformers import AutoConfig
path, n_prompt, n_new = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cfg = AutoConfig.from_pretrained(path)
if cfg.model_type == "qwen3_5_moe":
    from transformers import Qwen3_5MoeForConditionalGeneration as M
else:
    from transformers import Qwen3_5ForConditionalGeneration as M
t0 = time.time()
model = M.from_pretrained(path, dtype=torch.bfloat16).cuda().eval()
print(f"loaded in {time.time() - t0:.1f} s ({cfg.model_type}), transformers", __import__("transformers").__version__, "torch", torch.__version__)
ids = torch.randint(1000, 100000, (1, n_prompt), device="cuda")
def run(n):
    torch.cuda.synchronize(); t = time.time()
    with torch.no_grad():
        out = model.generate(input_ids=ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    torch.cuda.synchronize()
    assert out.shape[1] == n_prompt + n
    return time.time() - t
run(4)
best = None
for _ in range(3):
    t1, tn = run(1), run(n_new)
    r = (n_new - 1) / (tn - t1)
    best = r if best is None or r > best else best
print(f"transformers decode: {best:.1f} tok/s (prompt {n_prompt}, {n_new} new tokens, bf16, eager)")
