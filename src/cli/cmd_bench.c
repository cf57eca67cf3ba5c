/* cmd_bench.c - `qvlm bench`: speed on a model directory (use `qvlm synth` for real shapes).
 *
 *   qvlm bench --model DIR [--backend cpu|cuda] [--threads N] [--precision f32|bf16]
 *              [--quant none|q8_0] [--prompt 512[,4096...]] [--gen 128] [--reps 3]
 *              [--vision 448x448,1024x768|none] [--json]
 *
 * Prompt processing: tokens/s of a fresh prefill of each --prompt size of random tokens.
 * Decode: tokens/s of --gen greedy tokens after the first size. Each is the best of --reps runs
 * after one warm-up. Vision: the tower's time on a random image of each size, then the prefill
 * of its tokens with the features already cached. Next to the numbers, the bounds measured on
 * this machine by the same run: decode = weight bytes read per token / memory bandwidth (on the
 * CPU the read bandwidth; on a GPU the device-to-device copy bandwidth, bytes read + written per
 * second); on the CPU, prefill and vision = their matrix-product FLOPs / the multiply-add peak
 * of the precision's instruction on all threads. --precision defaults to f32 on the CPU and
 * bf16 on CUDA (each backend's usual mode). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/bench.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/fileio.h"
#include "core/threads.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu.h"
#include "model/model.h"
#include "qvlm.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- memory bandwidth ---------------------------------------------------------------------- */

struct bw_job {
    const uint8_t *src;
    size_t n;
    double sums[64];
};

/* 2 MiB aligned, huge pages advised: the weights the decode streams live in such pages (see
 * model.c), and with 4 KiB pages the prefetchers stop at every page, which would understate the
 * bound. */
static uint8_t *alloc_probe(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, (size_t)2 << 20, n) != 0) return NULL;
    qvlm_advise_hugepages(p, n);
    return p;
}

/* Each thread reads its share through the kernels' own probe (4 sequential streams of full
 * vector loads), the way the decode GEMV streams weights. */
static void read_task(void *p, int ith, int nth) {
    struct bw_job *j = p;
    long a, b;
    qvlm_split_rows((long)(j->n / 4096), ith, nth, &a, &b);
    j->sums[ith & 63] =
        (double)qvlm_cpu_read_probe(qvlm_cpu_detect_isa(), j->src + (size_t)a * 4096, (size_t)(b - a) * 4096);
}

/* Best-of-10 copy bandwidth (bytes read + written per second) and read bandwidth over 512 MiB
 * buffers, far larger than any cache. */
static void measure_bandwidth(int threads, double *copy_gbs, double *read_gbs) {
    const size_t n = (size_t)512 << 20;
    qvlm_pool *pool = NULL;
    qvlm_error err;
    *copy_gbs = *read_gbs = 0;
    uint8_t *a = alloc_probe(n), *b = alloc_probe(n);
    if (!a || !b || qvlm_pool_create(threads, &pool, &err)) goto out;
    memset(a, 1, n), memset(b, 2, n);
    struct bw_job j = {a, n, {0}};
    for (int r = 0; r < 10; r++) {
        double t0 = now_s();
        qvlm_pool_memcpy(pool, b, a, n);
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
            b += (double)(qvlm_tensor_bytes(&a->q_proj) + qvlm_tensor_bytes(&a->k_proj) +
                          qvlm_tensor_bytes(&a->v_proj) + qvlm_tensor_bytes(&a->o_proj));
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
            b += (k == 0 ? scale : 1) *
                 (double)(qvlm_tensor_bytes(&mlps[k]->gate_proj) + qvlm_tensor_bytes(&mlps[k]->up_proj) +
                          qvlm_tensor_bytes(&mlps[k]->down_proj));
    }
    b += (double)qvlm_tensor_bytes(&m->lm_head);
    return b;
}

/* FLOPs of the text tower's matrix products per prefill token (2 per weight of every
 * projection and MLP; MoE: the routed top-k and the shared expert), without the lm_head, which
 * a prefill runs for its last position only. */
static double prefill_flops_per_token(const qvlm_model *m) {
    const qvlm_text_config *t = &m->cfg.text;
    double w = 0;
    for (int64_t i = 0; i < t->num_hidden_layers; i++) {
        const qvlm_layer *l = &m->layers[i];
        const qvlm_tensor *list[8];
        int n = 0;
        if (l->is_full) {
            list[n++] = &l->attn.q_proj, list[n++] = &l->attn.k_proj;
            list[n++] = &l->attn.v_proj, list[n++] = &l->attn.o_proj;
        }
        else
            list[n++] = &l->gdn.in_proj_qkv, list[n++] = &l->gdn.in_proj_z, list[n++] = &l->gdn.in_proj_a,
            list[n++] = &l->gdn.in_proj_b, list[n++] = &l->gdn.out_proj;
        for (int k = 0; k < n; k++) w += (double)qvlm_tensor_rows(list[k]) * (double)qvlm_tensor_cols(list[k]);
        const qvlm_mlp_weights *mlps[2] = {&l->mlp, NULL};
        double scale = 1;
        if (m->cfg.model_type == QVLM_MODEL_QWEN3_5_MOE)
            mlps[0] = &l->moe.expert[0], mlps[1] = &l->moe.shared, scale = (double)t->num_experts_per_tok;
        for (int k = 0; k < 2 && mlps[k]; k++) {
            const qvlm_tensor *g = &mlps[k]->gate_proj;
            w += (k == 0 ? scale : 1) * 3.0 * (double)qvlm_tensor_rows(g) * (double)qvlm_tensor_cols(g);
        }
    }
    return 2.0 * w;
}

/* FLOPs of the vision tower on one image of n patches (matrix products and attention). */
static double vision_flops(const qvlm_model *m, int64_t n) {
    const qvlm_vision_config *v = &m->cfg.vision;
    const double H = (double)v->hidden_size, I = (double)v->intermediate_size, N = (double)n;
    const double g = (double)(v->spatial_merge_size * v->spatial_merge_size),
                 pd = (double)(v->in_channels * v->temporal_patch_size * v->patch_size * v->patch_size);
    double per_block = 2 * N * (3 * H * H + H * H + 2 * H * I) + 4 * N * N * H; /* qkv, proj, fc1+fc2; QK^T and PV */
    double merger = 2 * (N / g) * (g * H * g * H + g * H * (double)v->out_hidden_size);
    return 2 * N * pd * H + (double)v->depth * per_block + merger;
}

struct peak_job {
    qvlm_isa isa;
    qvlm_precision prec;
    bool i8;
    double flops[64];
};

static void peak_task(void *p, int ith, int nth) {
    struct peak_job *j = p;
    const int64_t iters = 20 * 1000 * 1000;
    j->flops[ith & 63] = j->i8 ? qvlm_cpu_peak_probe_i8(j->isa, iters) : qvlm_cpu_peak_probe(j->isa, j->prec, iters);
}

/* FLOP/s of the precision's multiply-add instruction (i8: the int8 kernels' step) on every
 * thread at once (best of 3). */
static double measure_peak(int threads, qvlm_precision prec, bool i8) {
    qvlm_pool *pool = NULL;
    qvlm_error err;
    if (qvlm_pool_create(threads, &pool, &err)) return 0;
    struct peak_job j = {qvlm_cpu_detect_isa(), prec, i8, {0}};
    double best = 0;
    for (int r = 0; r < 3; r++) {
        double t0 = now_s();
        qvlm_pool_run(pool, peak_task, &j);
        double dt = now_s() - t0, f = 0;
        for (int i = 0; i < threads && i < 64; i++) f += j.flops[i];
        if (f / dt > best) best = f / dt;
    }
    qvlm_pool_destroy(pool);
    return best;
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

/* ---- vision --------------------------------------------------------------------------------- */

typedef struct vision_result {
    int w, h;
    double tower_ms, prefill_ms;
    int64_t tokens;
    double peak_mib;
} vision_result;

/* One random image of w x h: the vision tower's time (preprocessing excluded) and peak backend
 * memory, then the prefill of its tokens alone (features from the cache). */
static qvlm_status bench_image(qvlm_model *m, int w, int h, vision_result *r, qvlm_error *err) {
    uint8_t *rgb = malloc((size_t)w * (size_t)h * 3);
    if (!rgb) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    uint32_t x = 12345u + (uint32_t)w;
    for (size_t i = 0; i < (size_t)w * (size_t)h * 3; i++) x = x * 1664525u + 1013904223u, rgb[i] = (uint8_t)(x >> 24);
    qvlm_cache *c = NULL;
    qvlm_session *s = NULL;
    qvlm_cache_config cc = {(size_t)8 << 30, NULL, 0, 0};
    qvlm_status rc = qvlm_model_cache_create(m, &cc, &c, err);
    qvlm_session_params sp = {.cache = c};
    /* The two prompts differ in their first token: the second finds the image's features in
     * the cache but no state checkpoint, so its prefill covers every image token. */
    int32_t ids[4] = {100, m->cfg.vision_start_token_id, m->cfg.image_token_id, m->cfg.vision_end_token_id};
    qvlm_image_input in = {.rgb = rgb, .width = w, .height = h};
    *r = (vision_result){w, h, 0, 0, 0, 0};
    if (!rc) rc = qvlm_session_create(m, &sp, &s, err);
    size_t base = 0, peak = 0;
    if (!rc) {
        qvlm_backend_mem_stats(m->be, &base, NULL);
        qvlm_backend_mem_reset_peak(m->be);
        rc = qvlm_session_prompt(s, ids, 4, &in, 1, err);
        qvlm_backend_mem_stats(m->be, NULL, &peak);
    }
    qvlm_prompt_stats st;
    if (!rc) {
        qvlm_session_prompt_stats(s, &st);
        r->tower_ms = st.vision_ms;
        r->tokens = st.prompt_tokens - 3;
        r->peak_mib = (double)(peak - base) / 1048576.0;
        qvlm_session_destroy(s);
        s = NULL;
        rc = qvlm_session_create(m, &sp, &s, err); /* fresh state, features cached */
    }
    ids[0] = 101;
    if (!rc) rc = qvlm_session_prompt(s, ids, 4, &in, 1, err);
    if (!rc) {
        qvlm_session_prompt_stats(s, &st);
        r->prefill_ms = st.prefill_ms;
        if (st.images_encoded != 0 || st.reused_tokens != 0)
            rc = qvlm_errorf(err, QVLM_E_INTERNAL, "image prefill: expected cached features and no reused state");
    }
    qvlm_session_destroy(s);
    qvlm_cache_destroy(c);
    free(rgb);
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
    const char *dir = NULL, *val, *scenario = NULL, *vision_sizes = "448x448,1024x768";
    int n_gen = 128, reps = 3, n_prompts = 1, prompts[MAX_PROMPTS] = {512};
    cli_cache_opts cache = {.gb = 8, .host_gb = -1};
    bool json = false, bad = false, precision_set = false;
    qvlm_model_params mp;
    qvlm_model_params_default(&mp);
    for (int i = 1; i < argc && !bad; i++) {
        if (cli_model_opt(argc, argv, &i, &mp, &precision_set, &bad))
            continue; /* --threads --backend --precision --quant */
        if (cli_opt(argc, argv, &i, "--model", &val, &bad) || cli_opt(argc, argv, &i, "-m", &val, &bad)) dir = val;
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
        else if (cli_opt(argc, argv, &i, "--scenario", &val, &bad)) scenario = val;
        else if (cli_cache_opt(argc, argv, &i, &cache, &bad)) continue;
        else if (cli_opt(argc, argv, &i, "--vision", &val, &bad)) vision_sizes = val;
        else if (strcmp(argv[i], "--json") == 0) json = true;
        else {
            fprintf(stderr, "qvlm bench: unknown option '%s'\n", argv[i]);
            bad = true;
        }
    }
    if (bad || !dir) {
        fprintf(stderr,
                "usage: qvlm bench --model DIR [--backend cpu|cuda] [--threads N] [--precision f32|bf16]\n"
                "                  [--quant none|q8_0] [--mmap] [--prompt 512[,4096...]] [--gen 128] [--reps 3]\n"
                "                  [--vision 448x448,1024x768|none] [--json]\n"
                "       qvlm bench --model DIR [--backend cpu|cuda] [--cache-dir DIR]\n"
                "                  --scenario multiturn|interleaved|edit|reimage|restart|tailedit\n"
                "                  [--cache-gb 8] [--cache-host-gb N (default 4 x --cache-gb on cuda, 0 on cpu)]\n");
        return 2;
    }
    cli_model_precision_default(&mp, precision_set);
    const int threads = mp.n_threads;
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
        qvlm_cache_config cc = cli_cache_config(&cache, &mp);
        qvlm_status src = qvlm_bench_scenario(m, scenario, &cc, &res, &err);
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
    for (int i = 0; ids && i < max_prompt; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[i] = (int32_t)(x % (uint64_t)m->cfg.text.vocab_size);
    }
    double best_pp[MAX_PROMPTS], best_tg = 1e30, pp, tg;
    qvlm_status rc = ids ? run_once(m, ids, prompts[0] < 64 ? prompts[0] : 64, 4, &pp, &tg, &err) /* warm-up */
                         : qvlm_errorf(&err, QVLM_E_NOMEM, "out of memory");
    for (int k = 0; k < n_prompts; k++) {
        best_pp[k] = 1e30;
        for (int r = 0; !rc && r < reps; r++) {
            rc = run_once(m, ids, prompts[k], k == 0 ? n_gen : 0, &pp, &tg, &err);
            if (pp < best_pp[k]) best_pp[k] = pp;
            if (k == 0 && tg > 0 && tg < best_tg) best_tg = tg;
        }
    }
    free(ids);
    if (rc) {
        fprintf(stderr, "qvlm bench: %s\n", err.msg);
        qvlm_model_destroy(m);
        return 1;
    }
    /* The vision tower on images of the asked sizes ("none" skips it). */
    vision_result vr[8];
    int n_vr = 0;
    for (const char *p = vision_sizes; m->cfg.vision.present && strcmp(vision_sizes, "none") && p && *p && n_vr < 8;) {
        int w = 0, h = 0;
        if (sscanf(p, "%dx%d", &w, &h) != 2 || w < 32 || h < 32 || w > 16384 || h > 16384) {
            fprintf(stderr, "qvlm bench: --vision wants WxH[,WxH...], e.g. 1024x768\n");
            break;
        }
        if (bench_image(m, w, h, &vr[n_vr], &err)) {
            fprintf(stderr, "qvlm bench: vision %dx%d: %s\n", w, h, err.msg);
            break;
        }
        n_vr++;
        p = strchr(p, ',');
        if (p) p++;
    }
    const bool gpu = mp.device == QVLM_DEVICE_CUDA;
    int nth = threads > 0 ? threads : qvlm_cpu_count();
    double copy_gbs, read_gbs = 0, peak = 0;
    if (gpu) copy_gbs = backend_copy_gbs(m->be);
    else measure_bandwidth(nth, &copy_gbs, &read_gbs);
    const qvlm_precision prec = mp.precision == QVLM_PRECISION_BF16 ? QVLM_PREC_BF16 : QVLM_PREC_F32;
    if (!gpu) peak = measure_peak(nth, prec, false); /* a GPU's matrix peak is not probed: no compute bound there */
    /* Q8_0 text weights at BF16 precision run the int8 kernels: their peak bounds the prefill
     * (the vision tower keeps its bf16 weights and the bf16 peak). */
    const bool i8 = !gpu && mp.quant == QVLM_QUANT_Q8_0 && prec == QVLM_PREC_BF16;
    const double pp_peak = i8 ? measure_peak(nth, prec, true) : peak;
    const double bw = gpu ? copy_gbs : read_gbs;
    double wbytes = decode_weight_bytes(m), bound = bw * 1e9 / wbytes;
    double pp_tps = prompts[0] / best_pp[0], tg_tps = best_tg < 1e29 ? 1.0 / best_tg : 0;
    const double pp_flops = prefill_flops_per_token(m), pp_bound = pp_peak / pp_flops;
    const char *quant = mp.quant == QVLM_QUANT_Q8_0 ? "q8_0" : "none";
    char cpu[256];
    cpu_model_name(cpu, sizeof(cpu));
    double load1 = -1;
    FILE *lf = fopen("/proc/loadavg", "r");
    if (lf && fscanf(lf, "%lf", &load1) != 1) load1 = -1;
    if (lf) fclose(lf);
    if (json) {
        json_t *o = json_pack("{s:s, s:i, s:s, s:s, s:s, s:f, s:f, s:i, s:i, s:f, s:f, s:f, s:f, s:s, s:f}", "cpu", cpu,
                              "threads", nth, "backend", qvlm_backend_name(m->be), "model", dir, "quant", quant,
                              "prefill_tok_s", pp_tps, "decode_tok_s", tg_tps, "prompt_tokens", prompts[0],
                              "gen_tokens", n_gen, "copy_bandwidth_gbs", copy_gbs, "read_bandwidth_gbs", read_gbs,
                              "decode_weight_gb", wbytes / 1e9, "decode_bound_tok_s", bound, "bound_bandwidth",
                              gpu ? "device copy" : "host read", "load_s", t_load);
        json_t *pa = json_array();
        for (int k = 0; k < n_prompts; k++)
            json_array_append_new(
                pa, json_pack("{s:i, s:f}", "tokens", prompts[k], "prefill_tok_s", prompts[k] / best_pp[k]));
        json_object_set_new(o, "prefill", pa);
        json_object_set_new(o, "weights_copied", json_boolean(!gpu && m->copy_bytes > 0)); /* else mapped (--mmap) */
        if (!gpu) {
            json_object_set_new(o, "peak_gflops", json_real(peak / 1e9));
            if (i8) json_object_set_new(o, "peak_int8_gflops", json_real(pp_peak / 1e9));
            json_object_set_new(o, "prefill_gflop_per_token", json_real(pp_flops / 1e9));
            json_object_set_new(o, "prefill_bound_tok_s", json_real(pp_bound));
        }
        json_object_set_new(o, "load_average", json_real(load1));
        json_t *vms = json_object(), *vpf = json_object(), *vmem = json_object(), *vtok = json_object(),
               *vbound = json_object();
        for (int k = 0; k < n_vr; k++) {
            char key[32];
            snprintf(key, sizeof(key), "%dx%d", vr[k].w, vr[k].h);
            json_object_set_new(vms, key, json_real(vr[k].tower_ms));
            json_object_set_new(vpf, key, json_real(vr[k].prefill_ms));
            json_object_set_new(vmem, key, json_real(vr[k].peak_mib));
            json_object_set_new(vtok, key, json_integer(vr[k].tokens));
            if (!gpu) json_object_set_new(vbound, key, json_real(1e3 * vision_flops(m, vr[k].tokens * 4) / peak));
        }
        json_object_set_new(o, "vision_ms", vms);
        json_object_set_new(o, "image_prefill_ms", vpf);
        json_object_set_new(o, "vision_peak_mib", vmem);
        json_object_set_new(o, "image_tokens", vtok);
        json_object_set_new(o, "vision_bound_ms", vbound);
        char *str = json_dumps(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
        puts(str);
        free(str);
        json_decref(o);
    } else {
        printf("%s: %s, %d threads, %s, weights %s, load average %.2f, loaded in %.1f s\n", gpu ? "host" : "cpu", cpu,
               nth, qvlm_backend_name(m->be),
               mp.quant == QVLM_QUANT_Q8_0 ? "q8_0 (quantised at load)"
               : gpu                       ? "as stored"
               : m->copy_bytes             ? "as stored, copied into huge pages"
                                           : "as stored, read from the mapped files",
               load1, t_load);
        if (gpu) {
            printf("machine: device copy %.1f GB/s (read+write)\n", copy_gbs);
        } else {
            printf("machine: read %.1f GB/s, copy %.1f GB/s (read+write), %s multiply-add peak %.0f GFLOP/s", read_gbs,
                   copy_gbs, prec == QVLM_PREC_BF16 ? "bf16" : "f32", peak / 1e9);
            if (i8) printf(", int8 (the q8_0 products) %.0f GFLOP/s", pp_peak / 1e9);
            printf("\n");
        }
        printf("\n%-30s %14s %14s %8s  %s\n", "", "measured", "bound", "of bound", "bound from");
        char what[64];
        for (int k = 0; k < n_prompts; k++) {
            snprintf(what, sizeof(what), "prefill (%d tokens)", prompts[k]);
            if (gpu) printf("%-30s %8.1f tok/s\n", what, prompts[k] / best_pp[k]);
            else
                printf("%-30s %8.1f tok/s %8.1f tok/s %7.0f%%  %.2f GFLOP/token / peak\n", what,
                       prompts[k] / best_pp[k], pp_bound, 100 * prompts[k] / best_pp[k] / pp_bound, pp_flops / 1e9);
        }
        snprintf(what, sizeof(what), "decode (%d tokens)", n_gen);
        printf("%-30s %8.2f tok/s %8.1f tok/s %7.0f%%  %.2f GB/token / %s bandwidth\n", what, tg_tps, bound,
               100 * tg_tps / bound, wbytes / 1e9, gpu ? "device copy" : "read");
        for (int k = 0; k < n_vr; k++) {
            double vf = vision_flops(m, vr[k].tokens * 4), vb = 1e3 * vf / peak;
            snprintf(what, sizeof(what), "vision %dx%d", vr[k].w, vr[k].h);
            if (gpu)
                printf("%-30s %11.1f ms %14s %8s  %.0f GFLOP; peak memory %.0f MiB\n", what, vr[k].tower_ms, "", "",
                       vf / 1e9, vr[k].peak_mib);
            else
                printf("%-30s %11.0f ms %11.0f ms %7.0f%%  %.0f GFLOP / peak; peak memory %.0f MiB\n", what,
                       vr[k].tower_ms, vb, 100 * vb / vr[k].tower_ms, vf / 1e9, vr[k].peak_mib);
            snprintf(what, sizeof(what), "image prefill (%lld tokens)", (long long)vr[k].tokens);
            printf("%-30s %11.1f ms\n", what, vr[k].prefill_ms);
        }
    }
    qvlm_model_destroy(m);
    return 0;
}
