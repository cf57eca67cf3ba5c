/* cmd_synth.c - `qvlm synth --preset P --out DIR`: a random-weight checkpoint in the real Hub
 * layout and real shapes (qwen35-arch §1.4), for benchmarks where real weights cannot be had.
 * Weights are drawn at about the scale of trained ones (normal, std 1/sqrt(fan_in)) so that no
 * kernel sees suspicious zeros; values are reproducible from --seed. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/dtype.h"
#include "core/fileio.h"
#include "model/checkpoint_layout.h"
#include "model/config.h"

typedef struct preset {
    const char *name;
    int64_t hidden, layers, inter, heads, kv_heads, v_heads, experts, top_k, moe_inter, shared_inter;
    bool tied;
    int64_t vdepth, vhidden, vheads, vinter;
} preset;

/* qwen35-arch §1.4. All sizes: head_dim 256, dk = dv = 128, 16 key heads, conv 4, vocab 248320. */
static const preset PRESETS[] = {
    {"qwen3.5-0.8b", 1024, 24, 3584, 8, 2, 16, 0, 0, 0, 0, true, 12, 768, 12, 3072},
    {"qwen3.5-2b", 2048, 24, 6144, 8, 2, 16, 0, 0, 0, 0, true, 24, 1024, 16, 4096},
    {"qwen3.5-4b", 2560, 32, 9216, 16, 4, 32, 0, 0, 0, 0, true, 24, 1024, 16, 4096},
    {"qwen3.5-9b", 4096, 32, 12288, 16, 4, 32, 0, 0, 0, 0, false, 27, 1152, 16, 4304},
    {"qwen3.5-27b", 5120, 64, 17408, 24, 4, 48, 0, 0, 0, 0, false, 27, 1152, 16, 4304},
    {"qwen3.5-35b-a3b", 2048, 40, 0, 16, 2, 32, 256, 8, 512, 512, false, 27, 1152, 16, 4304},
};

static json_t *config_json(const preset *p) {
    json_t *lt = json_array();
    for (int64_t i = 0; i < p->layers; i++)
        json_array_append_new(lt, json_string((i + 1) % 4 == 0 ? "full_attention" : "linear_attention"));
    bool moe = p->experts > 0;
    json_t *tc = json_pack(
        "{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:{s:s, s:f, s:f, s:[i,i,i], s:b}, "
        "s:f, s:b, s:I, s:b}",
        "model_type", moe ? "qwen3_5_moe_text" : "qwen3_5_text", "vocab_size", (json_int_t)248320, "hidden_size",
        (json_int_t)p->hidden, "num_hidden_layers", (json_int_t)p->layers, "num_attention_heads", (json_int_t)p->heads,
        "num_key_value_heads", (json_int_t)p->kv_heads, "head_dim", (json_int_t)256, "hidden_act", "silu", "rms_norm_eps",
        1e-6, "linear_conv_kernel_dim", (json_int_t)4, "linear_key_head_dim", (json_int_t)128, "linear_value_head_dim",
        (json_int_t)128, "linear_num_key_heads", (json_int_t)16, "linear_num_value_heads", (json_int_t)p->v_heads,
        "max_position_embeddings", (json_int_t)262144, "layer_types", lt, "rope_parameters", "rope_type", "default",
        "rope_theta", 10000000.0, "partial_rotary_factor", 0.25, "mrope_section", 11, 11, 10, "mrope_interleaved", 1,
        "partial_rotary_factor", 0.25, "tie_word_embeddings", p->tied, "eos_token_id", (json_int_t)248044, "attn_output_gate", 1);
    if (moe) {
        json_object_set_new(tc, "num_experts", json_integer(p->experts));
        json_object_set_new(tc, "num_experts_per_tok", json_integer(p->top_k));
        json_object_set_new(tc, "moe_intermediate_size", json_integer(p->moe_inter));
        json_object_set_new(tc, "shared_expert_intermediate_size", json_integer(p->shared_inter));
    } else {
        json_object_set_new(tc, "intermediate_size", json_integer(p->inter));
    }
    json_t *vc = json_pack("{s:s, s:I, s:I, s:I, s:I, s:i, s:i, s:i, s:i, s:I, s:i, s:s, s:[], s:{s:s, s:f}}", "model_type",
                           "qwen3_5_vision", "depth", (json_int_t)p->vdepth, "hidden_size", (json_int_t)p->vhidden,
                           "num_heads", (json_int_t)p->vheads, "intermediate_size", (json_int_t)p->vinter, "in_channels", 3,
                           "patch_size", 16, "temporal_patch_size", 2, "spatial_merge_size", 2, "out_hidden_size",
                           (json_int_t)p->hidden, "num_position_embeddings", 2304, "hidden_act", "gelu_pytorch_tanh",
                           "deepstack_visual_indexes", "rope_parameters", "rope_type", "axial", "rope_theta", 10000.0);
    return json_pack("{s:[s], s:s, s:o, s:o, s:i, s:i, s:i, s:i, s:b, s:s}", "architectures",
                     moe ? "Qwen3_5MoeForConditionalGeneration" : "Qwen3_5ForConditionalGeneration", "model_type",
                     moe ? "qwen3_5_moe" : "qwen3_5", "text_config", tc, "vision_config", vc, "image_token_id", 248056,
                     "video_token_id", 248057, "vision_start_token_id", 248053, "vision_end_token_id", 248054,
                     "tie_word_embeddings", p->tied, "dtype", "bfloat16");
}

/* ---- random values ------------------------------------------------------------------------------ */

typedef struct rng {
    uint64_t s;
} rng;
static inline uint64_t next(rng *r) {
    r->s ^= r->s << 13, r->s ^= r->s >> 7, r->s ^= r->s << 17;
    return r->s;
}
/* Approximately standard normal (Irwin-Hall of 4 uniforms, rescaled). */
static inline float normalish(rng *r) {
    uint64_t x = next(r);
    float s = (float)(x & 0xffff) + (float)((x >> 16) & 0xffff) + (float)((x >> 32) & 0xffff) + (float)(x >> 48);
    return (s / 65535.0f - 2.0f) * 1.7320508f;
}

static float draw(const qvlm_layout_tensor *t, rng *r) {
    switch (t->init) {
    case 0: return normalish(r) / sqrtf((float)t->fan_in);
    case 1: return 0.1f * normalish(r);
    case 2: return 1.0f + 0.1f * normalish(r);
    case 3: return 0.02f * normalish(r);
    case 4: return logf(1.0f + 15.0f * (float)(next(r) >> 40) / (float)(1 << 24));
    default: return 0.02f * normalish(r);
    }
}

static size_t tensor_bytes(const qvlm_layout_tensor *t) {
    size_t n = qvlm_dtype_size(t->dtype);
    for (int i = 0; i < t->n_dims; i++) n *= (size_t)t->shape[i];
    return n;
}

/* Write tensors [a, b) as one safetensors shard, values generated in 4 MiB pieces. */
static int write_shard(const char *path, const qvlm_layout_tensor *ts, int64_t a, int64_t b, uint64_t seed) {
    json_t *h = json_object();
    size_t off = 0;
    for (int64_t i = a; i < b; i++) {
        json_t *shape = json_array();
        for (int d = 0; d < ts[i].n_dims; d++) json_array_append_new(shape, json_integer(ts[i].shape[d]));
        size_t n = tensor_bytes(&ts[i]);
        json_object_set_new(h, ts[i].name, json_pack("{s:s, s:o, s:[I, I]}", "dtype", qvlm_dtype_name(ts[i].dtype),
                                                     "shape", shape, "data_offsets", (json_int_t)off, (json_int_t)(off + n)));
        off += n;
    }
    json_object_set_new(h, "__metadata__", json_pack("{s:s}", "format", "pt"));
    char *text = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(h);
    size_t hl = strlen(text), padded = (hl + 7) & ~(size_t)7;
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        fprintf(stderr, "qvlm synth: cannot create %s: %s\n", tmp, strerror(errno));
        free(text);
        return 1;
    }
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    int bad = fwrite(len, 1, 8, f) != 8 || fwrite(text, 1, hl, f) != hl;
    for (size_t i = hl; i < padded; i++) bad |= fputc(' ', f) == EOF;
    free(text);
    enum { PIECE = 1 << 21 };
    uint16_t *buf16 = malloc(PIECE * sizeof(uint16_t));
    float *buf32 = malloc(PIECE * sizeof(float));
    for (int64_t i = a; i < b && !bad && buf16 && buf32; i++) {
        rng r = {seed * 0x9e3779b97f4a7c15ull + (uint64_t)i * 0xbf58476d1ce4e5b9ull + 1};
        size_t n = tensor_bytes(&ts[i]) / qvlm_dtype_size(ts[i].dtype);
        for (size_t done = 0; done < n && !bad;) {
            size_t m = n - done < PIECE ? n - done : PIECE;
            if (ts[i].dtype == QVLM_DTYPE_F32) {
                for (size_t k = 0; k < m; k++) buf32[k] = draw(&ts[i], &r);
                bad |= fwrite(buf32, 4, m, f) != m;
            } else {
                for (size_t k = 0; k < m; k++) buf16[k] = qvlm_f32_to_bf16(draw(&ts[i], &r));
                bad |= fwrite(buf16, 2, m, f) != m;
            }
            done += m;
        }
    }
    free(buf16);
    free(buf32);
    bad |= fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        fprintf(stderr, "qvlm synth: writing %s failed: %s\n", path, strerror(errno));
        unlink(tmp);
        return 1;
    }
    return 0;
}

static int write_json(const char *dir, const char *name, json_t *j) {
    char *path = qvlm_path_join(dir, name);
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    qvlm_error err;
    int rc = !path || !text || qvlm_file_write_atomic(path, text, strlen(text), &err) != QVLM_OK;
    if (rc) fprintf(stderr, "qvlm synth: cannot write %s\n", path ? path : name);
    free(path);
    free(text);
    json_decref(j);
    return rc;
}

static void usage(FILE *f) {
    fprintf(f, "usage: qvlm synth --preset NAME --out DIR [--seed N] [--shard-gb G] [--layers N]\n"
               "  --layers N  the preset's shapes with N decoder layers (per-layer measurements)\npresets:");
    for (size_t i = 0; i < sizeof(PRESETS) / sizeof(PRESETS[0]); i++) fprintf(f, " %s", PRESETS[i].name);
    fprintf(f, "\n");
}

int qvlm_cmd_synth(int argc, char **argv) {
    const char *name = NULL, *out = NULL, *val;
    uint64_t seed = 1;
    double shard_gb = 4.0;
    int64_t layers = 0;
    bool bad = false;
    for (int i = 1; i < argc && !bad; i++) {
        if (strcmp(argv[i], "--help") == 0) return usage(stdout), 0;
        else if (cli_opt(argc, argv, &i, "--preset", &val, &bad)) name = val;
        else if (cli_opt(argc, argv, &i, "--out", &val, &bad)) out = val;
        else if (cli_opt(argc, argv, &i, "--seed", &val, &bad)) seed = (uint64_t)cli_int("--seed", val, 0, INT64_MAX, &bad);
        else if (cli_opt(argc, argv, &i, "--shard-gb", &val, &bad)) shard_gb = cli_num("--shard-gb", val, 0.001, 1e6, &bad);
        else if (cli_opt(argc, argv, &i, "--layers", &val, &bad)) layers = cli_int("--layers", val, 1, 1024, &bad);
        else {
            fprintf(stderr, "qvlm synth: unknown option '%s'\n", argv[i]);
            bad = true;
        }
    }
    const preset *p = NULL;
    for (size_t i = 0; name && i < sizeof(PRESETS) / sizeof(PRESETS[0]); i++)
        if (strcmp(PRESETS[i].name, name) == 0) p = &PRESETS[i];
    if (bad || !p || !out) {
        if (!bad && name && !p) fprintf(stderr, "qvlm synth: unknown preset '%s'\n", name);
        usage(stderr);
        return 2;
    }
    if (mkdir(out, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "qvlm synth: cannot create %s: %s\n", out, strerror(errno));
        return 1;
    }
    preset shaped = *p;
    if (layers) shaped.layers = layers;
    p = &shaped;
    json_t *cj = config_json(p);
    char *ctext = json_dumps(cj, 0);
    qvlm_config cfg;
    qvlm_error err;
    if (qvlm_config_parse(ctext, strlen(ctext), "preset config.json", &cfg, &err) != QVLM_OK) {
        fprintf(stderr, "qvlm synth: internal preset error: %s\n", err.msg);
        free(ctext);
        json_decref(cj);
        return 1;
    }
    free(ctext);
    int rc = write_json(out, "config.json", cj);
    rc |= write_json(out, "generation_config.json", json_pack("{s:[i, i], s:i}", "eos_token_id", 248046, 248044, "pad_token_id", 248044));
    rc |= write_json(out, "preprocessor_config.json",
                     json_pack("{s:{s:i, s:i}, s:i, s:i, s:i, s:[f,f,f], s:[f,f,f], s:f, s:i, s:s, s:s}", "size", "longest_edge",
                               16777216, "shortest_edge", 65536, "patch_size", 16, "temporal_patch_size", 2, "merge_size", 2,
                               "image_mean", 0.5, 0.5, 0.5, "image_std", 0.5, 0.5, 0.5, "rescale_factor", 1.0 / 255, "resample", 3,
                               "processor_class", "Qwen3VLProcessor", "image_processor_type", "Qwen2VLImageProcessorFast"));
    qvlm_layout_tensor *ts = NULL;
    int64_t n = qvlm_checkpoint_layout(&cfg, p->tied, &ts);
    qvlm_config_free(&cfg);
    if (n < 0 || rc) {
        free(ts);
        return 1;
    }
    /* Shards of about shard_gb GB, named as the Hub names them. */
    const size_t limit = (size_t)(shard_gb * 1e9);
    int64_t starts[4096], n_shards = 0;
    size_t acc = 0, total = 0;
    for (int64_t i = 0; i < n && n_shards < 4095; i++) {
        if (i == 0 || acc + tensor_bytes(&ts[i]) > limit) starts[n_shards++] = i, acc = 0;
        acc += tensor_bytes(&ts[i]);
        total += tensor_bytes(&ts[i]);
    }
    starts[n_shards] = n;
    json_t *wmap = json_object();
    for (int64_t s = 0; s < n_shards && !rc; s++) {
        char fname[64], *path;
        snprintf(fname, sizeof(fname), "model-%05lld-of-%05lld.safetensors", (long long)s + 1, (long long)n_shards);
        path = qvlm_path_join(out, fname);
        fprintf(stderr, "qvlm synth: writing %s (%lld tensors)\n", fname, (long long)(starts[s + 1] - starts[s]));
        rc |= write_shard(path, ts, starts[s], starts[s + 1], seed);
        free(path);
        for (int64_t i = starts[s]; i < starts[s + 1]; i++) json_object_set_new(wmap, ts[i].name, json_string(fname));
    }
    rc |= write_json(out, "model.safetensors.index.json",
                     json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)total, "weight_map", wmap));
    free(ts);
    if (!rc) fprintf(stderr, "qvlm synth: %s: %.2f GB in %lld shard(s)\n", p->name, (double)total / 1e9, (long long)n_shards);
    return rc;
}
