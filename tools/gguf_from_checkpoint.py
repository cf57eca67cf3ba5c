"""gguf_from_checkpoint.py - a llama.cpp GGUF (architecture qwen35) with the shapes and bytes of a
dense Qwen3.5 checkpoint directory such as `qvlm synth` makes, for benchmarking llama.cpp on the
same machine and shapes as `qvlm bench` (scripts/llamacpp_compare.sh).

    python3 tools/gguf_from_checkpoint.py CHECKPOINT_DIR OUT.gguf LLAMA_CPP_SOURCE_DIR

Only the speed is of interest: tensors are copied as stored (bf16 matrices stay bf16), renamed to
llama.cpp's names with its shapes, and the values are not converted the way llama.cpp's own
converter would (RMSNorm weights are not offset by one, the value heads are not reordered), so
the model computes something else than the checkpoint. The vocabulary is the checkpoint's size
with placeholder tokens (llama-bench feeds random ids). Vision and MTP tensors are left out.
Needs numpy and the gguf package of the llama.cpp tree (LLAMA_CPP_SOURCE_DIR/gguf-py).
"""
import json
import os
import struct
import sys

import numpy as np


def safetensors(path):
    """(name, dtype, shape, raw bytes) of every tensor of one file, memory-mapped."""
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        hdr = json.loads(f.read(n))
    mm = np.memmap(path, dtype=np.uint8, mode='r')
    for name, info in hdr.items():
        if name == '__metadata__':
            continue
        a, b = info['data_offsets']
        yield name, info['dtype'], info['shape'], mm[8 + n + a: 8 + n + b]


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    src, out, llama = sys.argv[1:]
    sys.path.insert(0, os.path.join(llama, 'gguf-py'))
    import gguf

    cfg = json.load(open(os.path.join(src, 'config.json')))
    t = cfg.get('text_config', cfg)
    if t.get('num_experts'):
        sys.exit('mixture-of-experts checkpoints are not handled')
    L, hd, rp = t['num_hidden_layers'], t['head_dim'], t['rope_parameters']
    w = gguf.GGUFWriter(out, 'qwen35')
    w.add_context_length(t['max_position_embeddings'])
    w.add_embedding_length(t['hidden_size'])
    w.add_block_count(L)
    w.add_feed_forward_length(t['intermediate_size'])
    w.add_head_count(t['num_attention_heads'])
    w.add_head_count_kv(t['num_key_value_heads'])
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_freq_base(rp['rope_theta'])
    w.add_rope_dimension_count(int(hd * rp['partial_rotary_factor']))
    w.add_rope_dimension_sections(list(rp['mrope_section']) + [0])
    w.add_layer_norm_rms_eps(t['rms_norm_eps'])
    w.add_ssm_conv_kernel(t['linear_conv_kernel_dim'])
    w.add_ssm_inner_size(t['linear_num_value_heads'] * t['linear_value_head_dim'])
    w.add_ssm_state_size(t['linear_key_head_dim'])
    w.add_ssm_time_step_rank(t['linear_num_value_heads'])
    w.add_ssm_group_count(t['linear_num_key_heads'])
    w.add_full_attention_interval(t.get('full_attention_interval', 4))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    V = t['vocab_size']
    eos = t.get('eos_token_id', 0)
    w.add_tokenizer_model('gpt2')
    w.add_tokenizer_pre('qwen2')
    w.add_token_list([f't{i}' for i in range(V)])
    w.add_token_types([gguf.TokenType.NORMAL] * V)
    w.add_token_merges(['t 0'])  # llama.cpp refuses a BPE vocabulary without merges
    w.add_bos_token_id(eos)
    w.add_eos_token_id(eos)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN35, L)
    index = json.load(open(os.path.join(src, 'model.safetensors.index.json')))
    n = 0
    for fn in sorted(set(index['weight_map'].values())):
        for name, dt, shape, raw in safetensors(os.path.join(src, fn)):
            if name.startswith('mtp.') or 'visual' in name:
                continue
            hf = name.replace('model.language_model.', 'model.')
            if hf.endswith('.dt_bias'):
                new = f'blk.{hf.split(".")[2]}.ssm_dt.bias'
            else:
                new = names.get_name(hf, try_suffixes=('.weight', '.bias'))
            if new is None:
                sys.exit(f'{name}: no llama.cpp name')
            if dt == 'BF16':
                arr, qt = raw.view(np.uint16).reshape(shape), gguf.GGMLQuantizationType.BF16
            elif dt == 'F32':
                arr, qt = raw.view(np.float32).reshape(shape), None
            else:
                sys.exit(f'{name}: dtype {dt} not handled')
            if '.conv1d' in hf:
                arr = arr.reshape(shape[0], shape[-1])
            if qt is not None and (arr.ndim == 1 or '.conv1d' in hf):  # llama.cpp wants these in f32
                arr, qt = (arr.astype(np.uint32) << 16).view(np.float32), None
            if hf.endswith('.A_log'):
                arr = -np.exp(arr.astype(np.float32))
            w.add_tensor(new, arr, raw_dtype=qt)
            n += 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f'{out}: {n} tensors', file=sys.stderr)


if __name__ == '__main__':
    main()
