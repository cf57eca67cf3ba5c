/* cmd_bench.c - `qvlm bench`: speed on a model directory (use `qvlm synth` for real shapes).
 *
 *   qvlm bench --model DIR [--backend cpu|cuda] [--threads N] [--precision f32|bf16]
 *              [--prompt 512[,4096...]] [--gen 128] [--reps 3] [--vision WxH] [--json]
 *
 * Prompt processing: tokens/s of a fresh prefill of each --prompt size of random tokens.
 * Decode: tokens/s of --gen greedy tokens after the first prompt size. Vision: ms to encode one
 * random WxH image through the tower (preprocessing excluded, reported apart). Each is the best
 * of --reps runs after one warm-up. Next to the numbers: the measured memory bandwidth and the
 * decode bound it implies, weight bytes read per token over the bandwidth: on the CPU the read
 * bandwidth, on a GPU the device-to-device copy bandwidth (bytes read + written per second).
 * --precision defaults to f32 on the CPU and bf16 on CUDA (each backend's usual mode). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/bench.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/threads.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu.h"
#include "model/image.h"
#include "model/image_codec.h"
#include "model/image_preprocess.h"
#include "model/model.h"
#include "model/vision.h"
#include "qvlm.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- memory bandwidth ---------------------------------------------------------------------- */

struct bw_job {
    const uint8_t *src;
    uint8_t *dst;
    size_t n;
    double sums[64];
};

static void copy_task(void *p, int ith, int nth) {
    struct bw_job *j = p;
    long a, b;
    qvlm_split_rows((long)(j->n / 4096), ith, nth, &a, &b);
    memcpy(j->dst + (size_t)a * 4096, j->src + (size_t)a * 4096, (size_t)(b - a) * 4096);
}

/* 16-byte vectors (GCC vector extension, portable SSE2 on x86-64): the loop must issue loads
 * faster than memory delivers them, which a scalar loop does not. */
typedef uint64_t u64x2 __attribute__((vector_size(16)));

static void read_task(void *p, int ith, int nth) {
    struct bw_job *j = p;
    long a, b;
    qvlm_split_rows((long)(j->n / 64), ith, nth, &a, &b);
    const u64x2 *s = (const u64x2 *)j->src;
    u64x2 acc0 = {0, 0}, acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (long i = a * 4; i < b * 4; i += 4) {
        acc0 ^= s[i], acc1 ^= s[i + 1], acc2 ^= s[i + 2], acc3 ^= s[i + 3];
    }
    u64x2 x = acc0 ^ acc1 ^ acc2 ^ acc3;
    j->sums[ith & 63] = (double)(x[0] ^ x[1]);
}

/* Best-of-5 copy bandwidth (bytes read + written per second) and read bandwidth over 512 MiB
 * buffers, far larger than any cache. */
static void measure_bandwidth(int threads, double *copy_gbs, double *read_gbs) {
    const size_t n = (size_t)512 << 20;
    qvlm_pool *pool = NULL;
    qvlm_error err;
    *copy_gbs = *read_gbs = 0;
    uint8_t *a = malloc(n), *b = malloc(n);
    if (!a || !b || qvlm_pool_create(threads, &pool, &err)) goto out;
    memset(a, 1, n), memset(b, 2, n);
    struct bw_job j = {a, b, n, {0}};
    for (int r = 0; r < 5; r++) {
        double t0 = now_s();
        qvlm_pool_run(pool, copy_task, &j);
        double t1 = now_s();
        qvlm_pool_run(pool, read_task, &j);
        double t2 = now_s();
        if (2.0 * n / (t1 - t0) / 1e9 > *copy_gbs) *copy_gbs = 2.0 * n / (t1 - t0) / 1e9;
        if ((double)n / (t2 - t1) / 1e9 > *read_gbs) *read_gbs = (double)n / (t2 - t1) / 1e9;
    }
out:
    qvlm_pool_destroy(pool);
    free(a);
    free(b);
}

/* Device-to-device copy bandwidth of a backend (bytes read + written per second), best of 10
 * copies of 1 GiB (256 MiB if that cannot be had); 0 if no memory. */
static double backend_copy_gbs(qvlm_backend *be) {
    size_t n = (size_t)1 << 30;
    void *a = qvlm_backend_alloc(be, n), *b = a ? qvlm_backend_alloc(be, n) : NULL;
    if (!b) {
        qvlm_backend_free(be, a);
        n >>= 2;
        a = qvlm_backend_alloc(be, n), b = a ? qvlm_backend_alloc(be, n) : NULL;
    }
    qvlm_stream *s = NULL;
    qvlm_error err;
    double best = 0;
    if (b && !qvlm_stream_create(be, &s, &err)) {
        qvlm_op_zero(s, a, n);
        qvlm_op_copy(s, b, a, n); /* warm-up */
        qvlm_stream_sync(s);
        for (int r = 0; r < 10; r++) {
            double t0 = now_s();
            qvlm_op_copy(s, b, a, n);
            qvlm_stream_sync(s);
            double gbs = 2.0 * (double)n / (now_s() - t0) / 1e9;
            if (gbs > best) best = gbs;
        }
        if (qvlm_stream_status(s, &err)) best = 0;
    }
    qvlm_stream_destroy(s);
    qvlm_backend_free(be, a);
    qvlm_backend_free(be, b);
    return best;
}

/* Bytes of weights one decode step reads: every text weight once (the embedding only through
 * the lm_head when tied; one row otherwise), for MoE only the routed top-k and shared experts. */
static double decode_weight_bytes(const qvlm_model *m) {
    const qvlm_text_config *t = &m->cfg.text;
    double b = 0;
    for (int64_t i = 0; i < t->num_hidden_layers; i++) {
        const qvlm_layer *l = &m->layers[i];
        b += (double)(qvlm_tensor_bytes(&l->input_layernorm) + qvlm_tensor_bytes(&l->post_attention_layernorm));
        if (l->is_full) {
            const qvlm_attn_weights *a = &l->attn;
            b += (double)(qvlm_tensor_bytes(&a->q_proj) + qvlm_tensor_bytes(&a->k_proj) + qvlm_tensor_bytes(&a->v_proj) +
                          qvlm_tensor_bytes(&a->o_proj));
        } else {
            const qvlm_gdn_weights *g = &l->gdn;
            b += (double)(qvlm_tensor_bytes(&g->in_proj_qkv) + qvlm_tensor_bytes(&g->in_proj_z) +
                          qvlm_tensor_bytes(&g->in_proj_a) + qvlm_tensor_bytes(&g->in_proj_b) +
                          qvlm_tensor_bytes(&g->conv1d) + qvlm_tensor_bytes(&g->out_proj));
        }
        const qvlm_mlp_weights *mlps[2] = {&l->mlp, NULL};
        double scale = 1;
        if (m->cfg.model_type == QVLM_MODEL_QWEN3_5_MOE) {
            mlps[0] = &l->moe.expert[0];
            mlps[1] = &l->moe.shared;
            scale = (double)t->num_experts_per_tok;
            b += (double)(qvlm_tensor_bytes(&l->moe.router) + qvlm_tensor_bytes(&l->moe.shared_gate));
        }
        for (int k = 0; k < 2 && mlps[k]; k++)
            b += (k == 0 ? scale : 1) * (double)(qvlm_tensor_bytes(&mlps[k]->gate_proj) + qvlm_tensor_bytes(&mlps[k]->up_proj) +
                                                 qvlm_tensor_bytes(&mlps[k]->down_proj));
    }
    b += (double)qvlm_tensor_bytes(&m->lm_head);
    return b;
}

/* ---- timing ---------------------------------------------------------------------------------- */

static int count_tokens(void *u, int32_t t) {
    (void)t;
    (*(int *)u)++;
    return 0;
}

static qvlm_status run_once(qvlm_model *m, const int32_t *ids, int n_prompt, int n_gen, double *pp_s, double *tg_s,
                            qvlm_error *err) {
    qvlm_session *s;
    qvlm_status rc = qvlm_session_create(m, NULL, &s, err);
    if (rc) return rc;
    double t0 = now_s();
    rc = qvlm_session_feed_tokens(s, ids, (size_t)n_prompt, err);
    double t1 = now_s();
    int got = 0;
    /* Random weights never produce the end-of-sequence id on purpose, but may by chance; the
     * generated count is what is timed. */
    qvlm_sampling greedy = {0};
    if (!rc && n_gen > 0) rc = qvlm_session_generate(s, &greedy, n_gen, count_tokens, &got, err);
    double t2 = now_s();
    *pp_s = t1 - t0;
    *tg_s = got > 1 ? (t2 - t1) / got : 0;
    qvlm_session_destroy(s);
    return rc;
}

/* Best-of-reps time to encode one random w x h image (pixels preprocessed once, apart). */
static qvlm_status time_vision(qvlm_model *m, int w, int h, int reps, double *enc_ms, double *prep_ms, int64_t *patches,
                               qvlm_error *err) {
    if (!m->cfg.vision.present) return qvlm_errorf(err, QVLM_E_UNSUPPORTED, "%s has no vision tower", m->dir);
    qvlm_image img = {0};
    qvlm_pixels px = {0};
    qvlm_stream *s = NULL;
    float *out = NULL;
    qvlm_status rc = qvlm_image_alloc(&img, w, h, "bench image", err);
    uint64_t x = 99;
    for (size_t i = 0; !rc && i < (size_t)w * (size_t)h * 3; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        img.rgb[i] = (uint8_t)(x >> 24);
    }
    double t0 = now_s();
    if (!rc) rc = qvlm_image_preprocess(&img, &m->preprocess, qvlm_backend_host_pool(m->be), &px, err);
    *prep_ms = 1e3 * (now_s() - t0);
    qvlm_grid g = {px.grid_t, px.grid_h, px.grid_w};
    *patches = px.n_patches;
    if (!rc) rc = qvlm_stream_create(m->be, &s, err);
    if (!rc) {
        int64_t rows = qvlm_grid_tokens(g, m->cfg.vision.spatial_merge_size);
        out = qvlm_backend_alloc(m->be, (size_t)(rows * m->cfg.text.hidden_size) * sizeof(float));
        if (!out) rc = qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    }
    if (!rc) rc = qvlm_vision_encode(m, s, px.values, &g, 1, out, err); /* warm-up */
    *enc_ms = 1e30;
    for (int r = 0; !rc && r < reps; r++) {
        t0 = now_s();
        rc = qvlm_vision_encode(m, s, px.values, &g, 1, out, err);
        double ms = 1e3 * (now_s() - t0);
        if (ms < *enc_ms) *enc_ms = ms;
    }
    qvlm_backend_free(m->be, out);
    qvlm_stream_destroy(s);
    qvlm_pixels_free(&px);
    qvlm_image_free(&img);
    return rc;
}

static const char *cpu_model_name(char *buf, size_t n) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    snprintf(buf, n, "unknown");
    char line[512];
    while (f && fgets(line, sizeof(line), f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *c = strchr(line, ':');
            if (c) {
                c += 2;
                c[strcspn(c, "\n")] = 0;
                snprintf(buf, n, "%s", c);
            }
            break;
        }
    }
    if (f) fclose(f);
    return buf;
}

#define MAX_PROMPTS 8

int qvlm_cmd_bench(int argc, char **argv) {
    const char *dir = NULL, *val, *scenario = NULL, *cache_dir = NULL;
    int threads = 0, n_gen = 128, reps = 3, n_prompts = 1, prompts[MAX_PROMPTS] = {512}, vis_w = 0, vis_h = 0;
    bool json = false, bad = false, precision_set = false;
    qvlm_model_params mp;
    qvlm_model_params_default(&mp);
    for (int i = 1; i < argc && !bad; i++) {
        if (cli_opt(argc, argv, &i, "--model", &val, &bad) || cli_opt(argc, argv, &i, "-m", &val, &bad)) dir = val;
        else if (cli_opt(argc, argv, &i, "--threads", &val, &bad)) threads = (int)cli_int("--threads", val, 0, 1024, &bad);
        else if (cli_opt(argc, argv, &i, "--prompt", &val, &bad)) {
            n_prompts = 0;
            for (const char *p = val; p && *p && !bad; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
                char num[32];
                size_t l = strcspn(p, ",");
                snprintf(num, sizeof(num), "%.*s", (int)(l < 31 ? l : 31), p);
                if (n_prompts == MAX_PROMPTS) bad = true;
                else prompts[n_prompts++] = (int)cli_int("--prompt", num, 1, 1 << 20, &bad);
            }
            if (n_prompts == 0) bad = true;
        } else if (cli_opt(argc, argv, &i, "--gen", &val, &bad)) n_gen = (int)cli_int("--gen", val, 0, 1 << 20, &bad);
        else if (cli_opt(argc, argv, &i, "--reps", &val, &bad)) reps = (int)cli_int("--reps", val, 1, 100, &bad);
        else if (cli_opt(argc, argv, &i, "--precision", &val, &bad)) {
            precision_set = true;
            if (strcmp(val, "f32") == 0) mp.precision = QVLM_PRECISION_F32;
            else if (strcmp(val, "bf16") == 0) mp.precision = QVLM_PRECISION_BF16;
            else bad = true;
        } else if (cli_opt(argc, argv, &i, "--backend", &val, &bad)) {
            if (strcmp(val, "cpu") == 0) mp.device = QVLM_DEVICE_CPU;
            else if (strcmp(val, "cuda") == 0) mp.device = QVLM_DEVICE_CUDA;
            else bad = true;
        } else if (cli_opt(argc, argv, &i, "--vision", &val, &bad)) {
            if (sscanf(val, "%dx%d", &vis_w, &vis_h) != 2 || vis_w < 32 || vis_h < 32 || vis_w > 16384 || vis_h > 16384) {
                fprintf(stderr, "qvlm bench: --vision wants WxH, e.g. 1024x768\n");
                bad = true;
            }
        } else if (cli_opt(argc, argv, &i, "--scenario", &val, &bad)) scenario = val;
        else if (cli_opt(argc, argv, &i, "--cache-dir", &val, &bad)) cache_dir = val;
        else if (strcmp(argv[i], "--json") == 0) json = true;
        else {
            fprintf(stderr, "qvlm bench: unknown option '%s'\n", argv[i]);
            bad = true;
        }
    }
    if (bad || !dir) {
        fprintf(stderr, "usage: qvlm bench --model DIR [--backend cpu|cuda] [--threads N] [--precision f32|bf16]\n"
                        "                  [--prompt 512[,4096...]] [--gen 128] [--reps 3] [--vision WxH] [--json]\n"
                        "       qvlm bench --model DIR --scenario multiturn|interleaved|edit|reimage|restart|tailedit "
                        "[--cache-dir DIR]\n");
        return 2;
    }
    if (mp.device == QVLM_DEVICE_CUDA && !precision_set) mp.precision = QVLM_PRECISION_BF16;
    mp.n_threads = threads;
    qvlm_error err;
    qvlm_model *m;
    double t_load = now_s();
    if (qvlm_model_load(dir, &mp, &m, &err)) {
        fprintf(stderr, "qvlm bench: %s\n", err.msg);
        return 1;
    }
    t_load = now_s() - t_load;
    if (scenario) {
        json_t *res = NULL;
        qvlm_status src = qvlm_bench_scenario(m, scenario, cache_dir, &res, &err);
        if (src) fprintf(stderr, "qvlm bench: %s\n", err.msg);
        else {
            char cpu[256];
            json_object_set_new(res, "cpu", json_string(cpu_model_name(cpu, sizeof(cpu))));
            json_object_set_new(res, "backend", json_string(qvlm_backend_name(m->be)));
            char *s = json_dumps(res, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
            puts(s);
            free(s);
            json_decref(res);
        }
        qvlm_model_destroy(m);
        return src ? 1 : 0;
    }
    int max_prompt = 0;
    for (int k = 0; k < n_prompts; k++) max_prompt = prompts[k] > max_prompt ? prompts[k] : max_prompt;
    int32_t *ids = malloc((size_t)max_prompt * sizeof(int32_t));
    uint64_t x = 12345;
    for (int i = 0; i < max_prompt; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[i] = (int32_t)(x % (uint64_t)m->cfg.text.vocab_size);
    }
    double best_pp[MAX_PROMPTS], best_tg = 1e30, pp, tg;
    qvlm_status rc = run_once(m, ids, prompts[0] < 64 ? prompts[0] : 64, 4, &pp, &tg, &err); /* warm-up */
    for (int k = 0; k < n_prompts; k++) {
        best_pp[k] = 1e30;
        for (int r = 0; !rc && r < reps; r++) {
            rc = run_once(m, ids, prompts[k], k == 0 ? n_gen : 0, &pp, &tg, &err);
            if (pp < best_pp[k]) best_pp[k] = pp;
            if (k == 0 && tg > 0 && tg < best_tg) best_tg = tg;
        }
    }
    free(ids);
    double vis_ms = 0, prep_ms = 0;
    int64_t vis_patches = 0;
    if (!rc && vis_w) rc = time_vision(m, vis_w, vis_h, reps, &vis_ms, &prep_ms, &vis_patches, &err);
    if (rc) {
        fprintf(stderr, "qvlm bench: %s\n", err.msg);
        qvlm_model_destroy(m);
        return 1;
    }
    const bool gpu = mp.device == QVLM_DEVICE_CUDA;
    int nth = threads > 0 ? threads : qvlm_cpu_count();
    double copy_gbs, read_gbs = 0;
    if (gpu) copy_gbs = backend_copy_gbs(m->be);
    else measure_bandwidth(nth, &copy_gbs, &read_gbs);
    const double bw = gpu ? copy_gbs : read_gbs;
    double wbytes = decode_weight_bytes(m), bound = bw * 1e9 / wbytes;
    double tg_tps = best_tg < 1e29 ? 1.0 / best_tg : 0;
    char cpu[256];
    cpu_model_name(cpu, sizeof(cpu));
    if (json) {
        json_t *o = json_pack("{s:s, s:i, s:s, s:s, s:f, s:i, s:i, s:f, s:f, s:f, s:f, s:s, s:f}", "cpu", cpu, "threads", nth,
                              "backend", qvlm_backend_name(m->be), "model", dir, "decode_tok_s", tg_tps, "prompt_tokens",
                              prompts[0], "gen_tokens", n_gen, "copy_bandwidth_gbs", copy_gbs, "read_bandwidth_gbs", read_gbs,
                              "decode_weight_gb", wbytes / 1e9, "decode_bound_tok_s", bound, "bound_bandwidth",
                              gpu ? "device copy" : "host read", "load_s", t_load);
        json_t *pa = json_array();
        for (int k = 0; k < n_prompts; k++)
            json_array_append_new(pa, json_pack("{s:i, s:f}", "tokens", prompts[k], "prefill_tok_s", prompts[k] / best_pp[k]));
        json_object_set_new(o, "prefill", pa);
        json_object_set_new(o, "prefill_tok_s", json_real(prompts[0] / best_pp[0]));
        if (vis_w)
            json_object_set_new(o, "vision", json_pack("{s:i, s:i, s:I, s:f, s:f}", "width", vis_w, "height", vis_h, "patches",
                                                       (json_int_t)vis_patches, "encode_ms", vis_ms, "preprocess_ms", prep_ms));
        char *s = json_dumps(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
        puts(s);
        free(s);
        json_decref(o);
    } else {
        printf("cpu:      %s, %d threads (%s)\n", cpu, nth, qvlm_backend_name(m->be));
        for (int k = 0; k < n_prompts; k++)
            printf("prefill:  %8.1f tok/s  (%d tokens)\n", prompts[k] / best_pp[k], prompts[k]);
        printf("decode:   %8.2f tok/s  (%d tokens after %d)\n", tg_tps, n_gen, prompts[0]);
        if (vis_w)
            printf("vision:   %8.1f ms per %dx%d image (%lld patches; preprocessing %.1f ms on the host)\n", vis_ms, vis_w,
                   vis_h, (long long)vis_patches, prep_ms);
        if (gpu) printf("memory:   device copy %.1f GB/s (read+write)\n", copy_gbs);
        else printf("memory:   copy %.1f GB/s (read+write), read %.1f GB/s\n", copy_gbs, read_gbs);
        printf("bound:    %.2f GB of weights per decode token -> %.1f tok/s at the %s bandwidth (%.0f%% reached)\n",
               wbytes / 1e9, bound, gpu ? "copy" : "read", 100.0 * tg_tps / bound);
    }
    qvlm_model_destroy(m);
    return 0;
}
