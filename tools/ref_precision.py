"""Measure how far transformers' float32 / bfloat16 runs are from its float64 run on a fixture,
and save the float64 (and bf16) outputs for comparison with qvlm.

Usage: python3 tools/ref_precision.py FIXTURE_DIR OUT.safetensors
Needs torch + transformers (the GPU machine has them). Runs on the CPU.
Writes NAME.logits_f64 (F64), NAME.logits_bf16 (F32), NAME.hidden_f64.K, imageN.embeds_f64,
and prints max |f32 - f64| and max |bf16 - f64| per prompt.
"""
import json, sys
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig

fx, out_path = sys.argv[1], sys.argv[2]
meta = json.load(open(f"{fx}/reference.json"))
ref = load_file(f"{fx}/reference.safetensors")
cfg = AutoConfig.from_pretrained(f"{fx}/model")
if cfg.model_type == "qwen3_5_moe":
    from transformers import Qwen3_5MoeForConditionalGeneration as M
else:
    from transformers import Qwen3_5ForConditionalGeneration as M

def run(dtype, device="cpu"):
    kw = {"experts_implementation": "eager"} if cfg.model_type == "qwen3_5_moe" else {}
    try:
        model = M.from_pretrained(f"{fx}/model", dtype=dtype, **kw).eval().to(device)
    except TypeError:
        model = M.from_pretrained(f"{fx}/model", dtype=dtype).eval().to(device)
    res = {}
    S = meta["special"]
    with torch.no_grad():
        for i in range(len(meta["images"])):
            pv, g = ref[f"image{i}.pixel_values"].to(dtype).to(device), ref[f"image{i}.grid_thw"].to(device)
            f = model.model.get_image_features(pixel_values=pv, image_grid_thw=g)
            f = f.pooler_output if hasattr(f, "pooler_output") else f[0]
            if isinstance(f, (tuple, list)): f = torch.cat(list(f), 0)
            res[f"image{i}.embeds"] = f.double().cpu()
        for name, p in meta["prompts"].items():
            inp = ref[f"{name}.input_ids"][None].to(device)
            kw = dict(input_ids=inp, attention_mask=torch.ones_like(inp),
                      mm_token_type_ids=(inp == S["image_pad"]).long() + 2 * (inp == S["video_pad"]).long())
            if p["images"]:
                kw["pixel_values"] = torch.cat([ref[f"image{i}.pixel_values"] for i in p["images"]]).to(dtype).to(device)
                kw["image_grid_thw"] = torch.cat([ref[f"image{i}.grid_thw"] for i in p["images"]]).to(device)
            o = model(**kw, output_hidden_states=True, use_cache=False)
            res[f"{name}.logits"] = o.logits[0].double().cpu()
            for k, h in enumerate(o.hidden_states):
                res[f"{name}.hidden.{k}"] = h[0].double().cpu()
    return res

f64, f32, b16 = run(torch.float64), run(torch.float32), run(torch.bfloat16)
save = {}
for k, v in f64.items():
    if ".logits" in k or ".embeds" in k or ".hidden." in k:
        save[k + "_f64"] = v.contiguous()
for k, v in b16.items():
    if ".logits" in k:
        save[k + "_bf16"] = v.float().contiguous()
save_file(save, out_path)
extra = {}
if torch.cuda.is_available():
    extra["cuda_f32"] = run(torch.float32, "cuda")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    extra["cuda_f32_notf32"] = run(torch.float32, "cuda")
torch.set_num_threads(1)
extra["cpu_f32_1thread"] = run(torch.float32)
for k in f64:
    if k.endswith(".logits"):
        print(k, " ".join(f"|ref-{n}| {(ref[k].double() - r[k]).abs().max().item():.3g}" for n, r in extra.items()),
              f"|ref-cpu_f32| {(ref[k].double() - f32[k]).abs().max().item():.3g}")
for k in f64:
    if k.endswith(".logits") or k.endswith(".embeds"):
        d32 = (f32[k] - f64[k]).abs().max().item()
        dref = (ref[k].double() - f64[k]).abs().max().item() if k in ref else float("nan")
        d16 = (b16[k] - f64[k]).abs()
        print(f"{k:22s} |f32-f64| {d32:.3g}  |ref-f64| {dref:.3g}  |bf16-f64| max {d16.max().item():.3g} mean {d16.mean().item():.3g}")
