/* cache_test.c - the cross-turn cache keeps outputs exact: under a budget so small it evicts
 * all the time, with corrupt files in its directory, between two images of the same size
 * (which must never share), and with 8 threads running conversations at once. Every output is
 * compared with the same conversation run without any cache. */
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/safetensors.h"
#include "qtest.h"
#include "qvlm.h"

#define FX QVLM_FIXTURES "/tiny-dense"
#define N_TURNS 4

static qvlm_model *model;
static qvlm_st_file ref;
static int32_t V;

typedef struct turn {
    int32_t ids[256];
    int64_t n;
    qvlm_image_input img[4];
    int n_img;
} turn;
static turn turns[N_TURNS];
static const char *IMG[4] = {FX "/images/img0.png", FX "/images/img1.png", FX "/images/img2.png", FX "/images/img3.jpg"};

static void load_turns(void) {
    static const int imgs[N_TURNS][4] = {{0}, {0, 1}, {0, 1}, {0, 1, 2, 3}};
    static const int n_imgs[N_TURNS] = {1, 2, 2, 4};
    for (int t = 0; t < N_TURNS; t++) {
        char key[64];
        snprintf(key, sizeof(key), "turn%d.input_ids", t + 1);
        const qvlm_st_tensor *x = qvlm_st_file_find(&ref, key);
        turns[t].n = x->n_elements;
        for (int64_t i = 0; i < x->n_elements; i++) turns[t].ids[i] = (int32_t)((const int64_t *)x->data)[i];
        turns[t].n_img = n_imgs[t];
        for (int k = 0; k < n_imgs[t]; k++) turns[t].img[k] = (qvlm_image_input){.path = IMG[imgs[t][k]]};
    }
}

/* Run the conversation (turn prompts in order, 3 greedy tokens after each, as a client that
 * does not send them back); store each turn's last logits in out[t]. */
static qvlm_status converse(qvlm_cache *cache, uint64_t salt, const turn *ts, int n_turns, float **out,
                            qvlm_prompt_stats *stats, qvlm_error *err) {
    qvlm_session *s;
    qvlm_session_params p = {.cache = cache, .cache_salt = salt};
    qvlm_status rc = qvlm_session_create(model, &p, &s, err);
    for (int t = 0; !rc && t < n_turns; t++) {
        rc = qvlm_session_prompt(s, ts[t].ids, (size_t)ts[t].n, ts[t].img, (size_t)ts[t].n_img, err);
        if (rc) break;
        memcpy(out[t], qvlm_session_logits(s), (size_t)V * sizeof(float));
        if (stats) qvlm_session_prompt_stats(s, &stats[t]);
        qvlm_sampling g = {0};
        rc = qvlm_session_generate(s, &g, 3, NULL, NULL, err);
    }
    qvlm_session_destroy(s);
    return rc;
}

static float *uncached[N_TURNS];

static double max_diff(const float *a, const float *b) {
    double m = 0;
    for (int32_t i = 0; i < V; i++) m = fmax(m, fabs(a[i] - b[i]));
    return m;
}

static float **alloc_out(void) {
    float **o = calloc(N_TURNS, sizeof(*o));
    for (int t = 0; t < N_TURNS; t++) o[t] = malloc((size_t)V * sizeof(float));
    return o;
}
static void free_out(float **o) {
    for (int t = 0; t < N_TURNS; t++) free(o[t]);
    free(o);
}

static void test_tiny_budget_still_exact(void) {
    qvlm_error err;
    size_t budgets[3] = {1, 600 << 10, (size_t)64 << 20};
    for (int b = 0; b < 3; b++) {
        qvlm_cache *c;
        qvlm_cache_config cc = {budgets[b], NULL, 0, 0};
        ASSERT_OK(qvlm_model_cache_create(model, &cc, &c, &err), &err);
        float **o = alloc_out();
        qvlm_prompt_stats st[N_TURNS];
        ASSERT_OK(converse(c, 0, turns, N_TURNS, o, st, &err), &err);
        qvlm_cache_counters k;
        qvlm_cache_counters_get(c, &k);
        double worst = 0;
        for (int t = 0; t < N_TURNS; t++) worst = fmax(worst, max_diff(o[t], uncached[t]));
        printf("  budget %zu B: evictions %llu, in use %zu B, turn4 reused %lld, max |cached - uncached| %.3g\n",
               budgets[b], (unsigned long long)k.evictions, k.bytes, (long long)st[3].reused_tokens, worst);
        ASSERT_TRUE(worst <= 1e-4);
        if (b < 2) ASSERT_TRUE(k.evictions > 0);
        if (b == 2) ASSERT_TRUE(st[3].reused_tokens == turns[2].n && k.evictions == 0);
        ASSERT_TRUE(k.bytes <= budgets[b] || b == 0); /* a 1-byte budget holds only what is in use */
        free_out(o);
        qvlm_cache_destroy(c);
    }
}

static int truncate_file_half(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && truncate(path, st.st_size / 2) == 0;
}

/* Overwrite byte `at` of every file in dir whose name starts with `prefix`. */
static int damage(const char *dir, const char *prefix, long at, bool truncate) {
    char cmd[512];
    int n = 0;
    snprintf(cmd, sizeof(cmd), "ls %s/*/%s* 2>/dev/null", dir, prefix);
    FILE *p = popen(cmd, "r");
    char line[512];
    while (p && fgets(line, sizeof(line), p)) {
        line[strcspn(line, "\n")] = 0;
        if (truncate) {
            if (truncate_file_half(line)) n++;
        } else {
            FILE *f = fopen(line, "r+b");
            if (f && fseek(f, at, SEEK_SET) == 0) {
                int ch = fgetc(f);
                fseek(f, at, SEEK_SET);
                fputc(ch ^ 0x5a, f);
                n++;
            }
            if (f) fclose(f);
        }
    }
    if (p) pclose(p);
    return n;
}

static void test_corrupt_files_ignored(void) {
    qvlm_error err;
    char dir[128];
    snprintf(dir, sizeof(dir), "/tmp/qvlm_cache_test_%d", (int)getpid());
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0) return;
    qvlm_cache *c;
    qvlm_cache_config cc = {(size_t)64 << 20, dir, 0, 0};
    float **o = alloc_out();
    ASSERT_OK(qvlm_model_cache_create(model, &cc, &c, &err), &err);
    ASSERT_OK(converse(c, 0, turns, 3, o, NULL, &err), &err);
    ASSERT_OK(qvlm_cache_flush(c, &err), &err);
    qvlm_cache_destroy(c);
    /* Break everything: a flipped payload byte in every checkpoint, truncated KV blocks and
     * features, and a stranger's file under a checkpoint name. */
    int n_ck = damage(dir, "ck-", 200, false), n_kv = damage(dir, "kv-", 0, true);
    damage(dir, "im-", 0, true);
    snprintf(cmd, sizeof(cmd), "for d in %s/*/; do head -c 300 /dev/urandom > $d/ck-0123456789abcdef0123456789abcdef.qvc; done",
             dir);
    ASSERT_TRUE(system(cmd) == 0);
    ASSERT_TRUE(n_ck > 0 && n_kv >= 0);
    ASSERT_OK(qvlm_model_cache_create(model, &cc, &c, &err), &err);
    qvlm_prompt_stats st[N_TURNS];
    ASSERT_OK(converse(c, 0, turns, N_TURNS, o, st, &err), &err);
    qvlm_cache_counters k;
    qvlm_cache_counters_get(c, &k);
    for (int t = 0; t < N_TURNS; t++) ASSERT_TRUE(max_diff(o[t], uncached[t]) <= 1e-4);
    printf("  after damage: %d checkpoint files corrupted, disk_skipped %llu, disk_hits %llu, turn1 reused %lld\n", n_ck,
           (unsigned long long)k.disk_skipped, (unsigned long long)k.disk_hits, (long long)st[0].reused_tokens);
    ASSERT_TRUE(k.disk_skipped > 0);
    ASSERT_EQ_INT(st[0].reused_tokens, 0); /* nothing corrupt was trusted */
    qvlm_cache_destroy(c);
    /* And a clean second process gets the hits. */
    ASSERT_OK(qvlm_model_cache_create(model, &cc, &c, &err), &err);
    ASSERT_OK(converse(c, 0, turns, N_TURNS, o, st, &err), &err);
    ASSERT_EQ_INT(st[3].reused_tokens, turns[3].n);
    ASSERT_EQ_INT(st[3].images_encoded, 0);
    for (int t = 0; t < N_TURNS; t++) ASSERT_TRUE(max_diff(o[t], uncached[t]) <= 1e-4);
    qvlm_cache_destroy(c);
    free_out(o);
    if (system(cmd) != 0) { /* best effort */
    }
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
}

/* The host-RAM tier under a "device" budget of 1 byte: every checkpoint and feature leaves
 * the backend's memory as soon as it is written down, so a second conversation over the same
 * turns is served entirely from host RAM (no vision, every prompt reused), exactly. Then with a
 * host budget too small for it all: with a directory the overflow lands there and is still
 * found; without one it is dropped and the outputs stay exact. Closing moves the host files to
 * the directory, where a new cache finds them. */
static qvlm_status host_tier_run(const qvlm_cache_config *cc, qvlm_cache **keep, qvlm_prompt_stats st[N_TURNS],
                                 qvlm_cache_counters *k, double *worst, qvlm_error *err) {
    qvlm_cache *c = keep ? *keep : NULL;
    qvlm_status rc = c ? QVLM_OK : qvlm_model_cache_create(model, cc, &c, err);
    float **o = alloc_out();
    if (!rc) rc = converse(c, 0, turns, N_TURNS, o, st, err);
    if (!rc) rc = qvlm_cache_flush(c, err); /* the writer has copied everything down */
    if (!rc) qvlm_cache_counters_get(c, k);
    *worst = 0;
    for (int t = 0; !rc && t < N_TURNS; t++) *worst = fmax(*worst, max_diff(o[t], uncached[t]));
    free_out(o);
    if (keep && !rc) {
        *keep = c;
    } else {
        qvlm_cache_destroy(c);
        if (keep) *keep = NULL;
    }
    return rc;
}

static void test_host_tier(void) {
    qvlm_error err;
    char dir[128], cmd[192];
    snprintf(dir, sizeof(dir), "/tmp/qvlm_cache_host_%d", (int)getpid());
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ASSERT_TRUE(system(cmd) == 0);
    qvlm_prompt_stats st[N_TURNS];
    qvlm_cache_counters k;
    double worst;
    /* 1. host RAM only, room for everything */
    qvlm_cache_config cc = {1, NULL, 0, (size_t)64 << 20};
    qvlm_cache *c = NULL;
    ASSERT_OK(host_tier_run(&cc, &c, st, &k, &worst, &err), &err);
    ASSERT_TRUE(worst <= 1e-4 && k.host_bytes > 0);
    ASSERT_OK(host_tier_run(&cc, &c, st, &k, &worst, &err), &err);
    printf("  host tier: %zu B in host RAM, %llu checkpoint loads from it, turn4 reused %lld of %lld\n", k.host_bytes,
           (unsigned long long)k.host_hits, (long long)st[3].reused_tokens, (long long)turns[3].n);
    ASSERT_TRUE(worst <= 1e-4);
    ASSERT_TRUE(k.host_hits >= N_TURNS);
    for (int t = 0; t < N_TURNS; t++) {
        ASSERT_EQ_INT(st[t].reused_tokens, turns[t].n);
        ASSERT_EQ_INT(st[t].images_encoded, 0);
    }
    qvlm_cache_destroy(c);
    /* 2. a host tier of 64 KiB over a directory: the rest spills to disk and is found there */
    cc = (qvlm_cache_config){1, dir, (size_t)64 << 20, (size_t)64 << 10};
    c = NULL;
    ASSERT_OK(host_tier_run(&cc, &c, st, &k, &worst, &err), &err);
    printf("  host tier of 64 KiB over a directory: %zu B in host RAM, %zu B on disk, max |diff| %.3g\n", k.host_bytes,
           k.disk_bytes, worst);
    ASSERT_TRUE(worst <= 1e-4 && k.host_bytes <= ((size_t)64 << 10) && k.disk_bytes > 0);
    ASSERT_OK(host_tier_run(&cc, &c, st, &k, &worst, &err), &err);
    ASSERT_TRUE(worst <= 1e-4);
    ASSERT_EQ_INT(st[3].reused_tokens, turns[3].n);
    ASSERT_EQ_INT(st[3].images_encoded, 0);
    qvlm_cache_destroy(c); /* host files go to the directory */
    /* 3. a new process (cache) on that directory, everything from disk */
    ASSERT_OK(host_tier_run(&cc, NULL, st, &k, &worst, &err), &err);
    ASSERT_TRUE(worst <= 1e-4);
    ASSERT_EQ_INT(st[0].reused_tokens, turns[0].n);
    /* 4. host RAM only, 64 KiB: what does not fit is dropped, outputs stay exact */
    cc = (qvlm_cache_config){1, NULL, 0, (size_t)64 << 10};
    c = NULL;
    ASSERT_OK(host_tier_run(&cc, &c, st, &k, &worst, &err), &err);
    ASSERT_OK(host_tier_run(&cc, &c, st, &k, &worst, &err), &err);
    ASSERT_TRUE(worst <= 1e-4 && k.host_bytes <= ((size_t)64 << 10));
    qvlm_cache_destroy(c);
    ASSERT_TRUE(system(cmd) == 0);
}

/* img0 (64x64) and img2 (53x77 resized to 64x64) have the same grid and so the same pad
 * tokens: the second conversation must re-encode its image and diverge at the span. */
static void test_same_size_images_never_share(void) {
    qvlm_error err;
    qvlm_cache *c;
    qvlm_cache_config cc = {(size_t)64 << 20, NULL, 0, 0};
    ASSERT_OK(qvlm_model_cache_create(model, &cc, &c, &err), &err);
    turn a = turns[0], b = turns[0];
    b.img[0] = (qvlm_image_input){.path = IMG[2]};
    float *oa[1] = {malloc((size_t)V * 4)}, *ob[1] = {malloc((size_t)V * 4)}, *ub[1] = {malloc((size_t)V * 4)};
    qvlm_prompt_stats sa, sb;
    ASSERT_OK(converse(c, 0, &a, 1, oa, &sa, &err), &err);
    ASSERT_OK(converse(c, 0, &b, 1, ob, &sb, &err), &err);
    ASSERT_OK(converse(NULL, 0, &b, 1, ub, NULL, &err), &err);
    ASSERT_EQ_INT(sb.images_encoded, 1);
    ASSERT_EQ_INT(sb.images_from_feature_cache, 0);
    ASSERT_TRUE(sb.reused_tokens <= 12); /* at most the text before <|vision_start|> */
    ASSERT_TRUE(max_diff(ob[0], ub[0]) <= 1e-4);
    ASSERT_TRUE(max_diff(oa[0], ob[0]) > 1e-3); /* a different image, a different answer */
    /* The same image again in a new conversation with other text: features come from the cache. */
    turn d = turns[0];
    d.ids[2] = (d.ids[2] + 1) % 900;
    float *od[1] = {malloc((size_t)V * 4)};
    qvlm_prompt_stats sd;
    ASSERT_OK(converse(c, 0, &d, 1, od, &sd, &err), &err);
    ASSERT_EQ_INT(sd.images_encoded, 0);
    ASSERT_EQ_INT(sd.images_from_feature_cache, 1);
    /* A different salt sees nothing of the others. */
    qvlm_prompt_stats ss;
    ASSERT_OK(converse(c, 77, &a, 1, od, &ss, &err), &err);
    ASSERT_EQ_INT(ss.reused_tokens, 0);
    free(oa[0]), free(ob[0]), free(ub[0]), free(od[0]);
    qvlm_cache_destroy(c);
}

typedef struct worker {
    qvlm_cache *cache;
    uint64_t salt;
    float **out;
    qvlm_status rc;
    qvlm_error err;
} worker;

static void *run_worker(void *p) {
    worker *w = p;
    w->rc = converse(w->cache, w->salt, turns, N_TURNS, w->out, NULL, &w->err);
    return NULL;
}

static void test_threads_interleaved(void) {
    qvlm_error err;
    qvlm_cache *c;
    qvlm_cache_config cc = {(size_t)8 << 20, NULL, 0, 0}; /* small enough to evict while they run */
    ASSERT_OK(qvlm_model_cache_create(model, &cc, &c, &err), &err);
    worker w[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        w[i] = (worker){c, (uint64_t)(i % 3), alloc_out(), QVLM_OK, {0}};
        ASSERT_TRUE(pthread_create(&th[i], NULL, run_worker, &w[i]) == 0);
    }
    for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
    double worst = 0;
    for (int i = 0; i < 8; i++) {
        if (w[i].rc) QTEST_FAIL("thread %d: %s", i, w[i].err.msg);
        for (int t = 0; t < N_TURNS; t++) worst = fmax(worst, max_diff(w[i].out[t], uncached[t]));
        free_out(w[i].out);
    }
    qvlm_cache_counters k;
    qvlm_cache_counters_get(c, &k);
    printf("  8 threads: hits %llu of %llu lookups, evictions %llu, max |diff| vs sequential uncached %.3g\n",
           (unsigned long long)k.hits, (unsigned long long)k.lookups, (unsigned long long)k.evictions, worst);
    ASSERT_TRUE(worst <= 1e-4);
    qvlm_cache_destroy(c);
}

int main(void) {
    qvlm_error err;
    qvlm_model_params mp;
    qvlm_model_params_default(&mp);
    mp.n_threads = 2;
    if (qvlm_model_load(FX "/model", &mp, &model, &err) || qvlm_st_open(FX "/reference.safetensors", &ref, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return 1;
    }
    V = qvlm_model_vocab_size(model);
    load_turns();
    for (int t = 0; t < N_TURNS; t++) uncached[t] = malloc((size_t)V * sizeof(float));
    if (converse(NULL, 0, turns, N_TURNS, uncached, NULL, &err)) {
        fprintf(stderr, "uncached run: %s\n", err.msg);
        return 1;
    }
    RUN(test_tiny_budget_still_exact);
    RUN(test_corrupt_files_ignored);
    RUN(test_same_size_images_never_share);
    RUN(test_threads_interleaved);
    RUN(test_host_tier);
    for (int t = 0; t < N_TURNS; t++) free(uncached[t]);
    qvlm_st_close(&ref);
    qvlm_model_destroy(model);
    return qtest_done();
}
