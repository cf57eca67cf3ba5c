/* bench_scenarios.c - `qvlm bench --scenario S`: time to first token per turn of chat-like
 * workloads with the cross-turn cache, without it, and the cost of the new content alone.
 *
 * Prompts are built the way a Qwen3.5 chat template lays them out, with random token ids for
 * the words (synthetic models have no tokenizer): each turn's prompt is the previous prompt
 * minus its last 2 tokens ("<think>\n", which the template drops from past answers), an answer,
 * the new user message and a 4-token generation prompt.
 *
 *   ttft_cached_ms    qvlm_session_prompt + first token, cache on (warm from earlier turns)
 *   ttft_uncached_ms  the same prompt from scratch, no cache
 *   new_content_ms    only what is new: a session already holding the longest prefix any
 *                     earlier prompt shares, with the features of every image seen before,
 *                     processes the rest (new images through the tower, new tokens prefilled)
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/bench.h"
#include "model/model.h"
#include "qvlm.h"

#define MAX_IMGS 64

typedef struct img {
    int w, h, seed;
    uint8_t *rgb;
} img;

typedef struct prompt {
    int32_t *ids;
    int64_t n, cap;
    int img_idx[MAX_IMGS]; /* indices into the scenario's image table */
    int n_img;
} prompt;

typedef struct bench_ctx {
    qvlm_model *m;
    qvlm_cache_config cc; /* the scenario's cache */
    uint64_t rng;
    int32_t vision_start, vision_end, pad;
    img imgs[MAX_IMGS];
    int n_imgs;
    json_t *turns;
} bench_ctx;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

static uint32_t next(bench_ctx *b) {
    b->rng ^= b->rng << 13, b->rng ^= b->rng >> 7, b->rng ^= b->rng << 17;
    return (uint32_t)(b->rng >> 11);
}

static void push(prompt *p, int32_t id) {
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 256;
        p->ids = realloc(p->ids, (size_t)p->cap * sizeof(int32_t));
    }
    p->ids[p->n++] = id;
}

/* ~1.3 tokens a word, ids away from the special tokens at the top of the vocabulary. */
static void words(bench_ctx *b, prompt *p, int n_words) {
    int32_t span = (int32_t)(b->m->cfg.text.vocab_size > 20000 ? 150000 : b->m->cfg.text.vocab_size - 40);
    for (int i = 0; i < n_words * 13 / 10; i++) push(p, 10 + (int32_t)(next(b) % (uint32_t)span));
}

static int add_image(bench_ctx *b, int w, int h) {
    img *im = &b->imgs[b->n_imgs];
    im->w = w, im->h = h, im->seed = b->n_imgs + 1;
    im->rgb = malloc((size_t)w * (size_t)h * 3);
    for (size_t i = 0; i < (size_t)w * (size_t)h * 3; i++) im->rgb[i] = (uint8_t)(next(b) >> 3);
    return b->n_imgs++;
}

static void image_block(bench_ctx *b, prompt *p, int idx) {
    push(p, b->vision_start);
    push(p, b->pad);
    push(p, b->vision_end);
    p->img_idx[p->n_img++] = idx;
}

static int images_before(const bench_ctx *b, const prompt *p, int64_t n) {
    int k = 0;
    for (int64_t i = 0; i < n && i < p->n; i++) k += p->ids[i] == b->pad;
    return k;
}

static void inputs(const bench_ctx *b, const prompt *p, int from, int to, qvlm_image_input *in) {
    for (int k = from; k < to; k++) {
        const img *im = &b->imgs[p->img_idx[k]];
        in[k - from] = (qvlm_image_input){.rgb = im->rgb, .width = im->w, .height = im->h};
    }
}

/* ---- the three measurements ------------------------------------------------------------------ */

static qvlm_status timed_prompt(qvlm_session *s, const bench_ctx *b, const prompt *p, double *ms,
                                qvlm_prompt_stats *st, qvlm_error *err) {
    qvlm_image_input in[MAX_IMGS];
    inputs(b, p, 0, p->n_img, in);
    double t0 = now_ms();
    qvlm_status rc = qvlm_session_prompt(s, p->ids, (size_t)p->n, in, (size_t)p->n_img, err);
    /* First token: sample from the logits (greedy argmax over the vocabulary). */
    const float *lg = rc ? NULL : qvlm_session_logits(s);
    int32_t best = 0;
    for (int32_t i = 1; lg && i < qvlm_model_vocab_size(b->m); i++) best = lg[i] > lg[best] ? i : best;
    *ms = now_ms() - t0;
    (void)best;
    if (!rc && st) qvlm_session_prompt_stats(s, st);
    return rc;
}

static qvlm_status uncached(bench_ctx *b, const prompt *p, double *ms, qvlm_error *err) {
    qvlm_session *s;
    qvlm_status rc = qvlm_session_create(b->m, NULL, &s, err);
    if (!rc) rc = timed_prompt(s, b, p, ms, NULL, err);
    qvlm_session_destroy(s);
    return rc;
}

/* One uncached prompt with an image before anything is timed: the first call of a process pays
 * for faulting in the mapped weights, the allocator's first blocks and, on a GPU, library
 * initialisation and graph capture, none of which a later turn pays. The scenario's own images
 * and random words are left as they would be without it. */
static qvlm_status warm_up(bench_ctx *b, qvlm_error *err) {
    const uint64_t rng = b->rng;
    const int n_imgs = b->n_imgs;
    prompt p = {0};
    words(b, &p, 40);
    image_block(b, &p, add_image(b, 256, 256));
    words(b, &p, 10);
    for (int i = 0; i < 4; i++) push(&p, 1000 + i);
    double ms;
    qvlm_status rc = uncached(b, &p, &ms, err);
    free(b->imgs[n_imgs].rgb);
    b->n_imgs = n_imgs, b->rng = rng;
    free(p.ids);
    return rc;
}

/* `ideal`: the longest prefix an earlier prompt shares; `seen`: images encoded before. */
static qvlm_status new_content(bench_ctx *b, const prompt *p, int64_t ideal, const bool *seen, double *ms,
                               qvlm_error *err) {
    qvlm_cache *c;
    qvlm_cache_config cc = {(size_t)16 << 30, NULL, 0, 0};
    qvlm_status rc = qvlm_model_cache_create(b->m, &cc, &c, err);
    qvlm_session *s = NULL, *tmp = NULL;
    qvlm_session_params sp = {.cache = c};
    if (!rc) rc = qvlm_session_create(b->m, &sp, &tmp, err);
    /* Features of the images after the shared prefix that were seen before. */
    int first = images_before(b, p, ideal);
    for (int k = first; !rc && k < p->n_img; k++) {
        if (!seen[p->img_idx[k]]) continue;
        int32_t blk[3] = {b->vision_start, b->pad, b->vision_end};
        qvlm_image_input in;
        inputs(b, p, k, k + 1, &in);
        rc = qvlm_session_prompt(tmp, blk, 3, &in, 1, err);
    }
    qvlm_session_destroy(tmp);
    if (!rc) rc = qvlm_session_create(b->m, &sp, &s, err);
    if (!rc && ideal > 0) {
        prompt pre = *p;
        pre.n = ideal;
        pre.n_img = first;
        qvlm_image_input in[MAX_IMGS];
        inputs(b, &pre, 0, first, in);
        rc = qvlm_session_feed(s, pre.ids, (size_t)ideal, in, (size_t)first, err);
        /* A fed prefix counts as the session's own state for the next prompt. */
    }
    if (!rc) rc = timed_prompt(s, b, p, ms, NULL, err);
    qvlm_session_destroy(s);
    qvlm_cache_destroy(c);
    return rc;
}

/* ---- turns --------------------------------------------------------------------------------- */

typedef struct history {
    prompt *p[64];
    int n;
    bool seen[MAX_IMGS];
} history;

/* Common prefix of two prompts, images compared by identity (placeholders are equal ids). */
static int64_t lcp(const bench_ctx *b, const prompt *a, const prompt *q) {
    int64_t i = 0;
    int ia = 0;
    while (i < a->n && i < q->n && a->ids[i] == q->ids[i]) {
        if (a->ids[i] == b->pad) {
            if (a->img_idx[ia] != q->img_idx[ia]) break;
            ia++;
        }
        i++;
    }
    return i;
}

static qvlm_status run_turn(bench_ctx *b, qvlm_session *cached_s, history *h, prompt *p, const char *label,
                            qvlm_error *err) {
    double t_cached, t_uncached, t_new;
    qvlm_prompt_stats st;
    qvlm_status rc = timed_prompt(cached_s, b, p, &t_cached, &st, err);
    if (!rc) rc = uncached(b, p, &t_uncached, err);
    int64_t ideal = 0;
    for (int k = 0; k < h->n; k++) {
        int64_t l = lcp(b, h->p[k], p);
        if (l > ideal) ideal = l;
    }
    if (!rc) rc = new_content(b, p, ideal, h->seen, &t_new, err);
    if (rc) return rc;
    for (int k = 0; k < p->n_img; k++) h->seen[p->img_idx[k]] = true;
    if (h->n < 64) h->p[h->n++] = p;
    json_array_append_new(b->turns, json_pack("{s:s, s:f, s:f, s:f, s:I, s:I, s:i, s:i, s:f}", "turn", label,
                                              "ttft_cached_ms", t_cached, "ttft_uncached_ms", t_uncached,
                                              "new_content_ms", t_new, "prompt_tokens", (json_int_t)st.prompt_tokens,
                                              "reused_tokens", (json_int_t)st.reused_tokens, "images_encoded",
                                              st.images_encoded, "images_from_feature_cache",
                                              st.images_from_feature_cache, "ratio", t_cached / (t_new > 0 ? t_new : 1e-9)));
    if (isatty(2))
        fprintf(stderr, "  %-4s cached %8.1f ms  uncached %8.1f ms  new content %8.1f ms  reused %lld/%lld  encoded %d\n",
                label, t_cached, t_uncached, t_new, (long long)st.reused_tokens, (long long)st.prompt_tokens,
                st.images_encoded);
    return QVLM_OK;
}

/* A chat: the previous prompt minus its "<think>\n", an answer, then the new user message. */
static void next_turn(bench_ctx *b, prompt *p, bool first) {
    if (!first) {
        p->n -= 2;         /* the template drops the past answer's thinking */
        words(b, p, 30);   /* the answer as re-rendered */
        push(p, 248046 % (int32_t)b->m->cfg.text.vocab_size);
    }
    push(p, 248045 % (int32_t)b->m->cfg.text.vocab_size); /* <|im_start|>user */
}

static void gen_prompt(bench_ctx *b, prompt *p) {
    for (int i = 0; i < 4; i++) push(p, 1000 + i); /* <|im_end|> <|im_start|>assistant <think> \n */
}

static prompt *clone(const prompt *p) {
    prompt *q = malloc(sizeof(*q));
    *q = *p;
    q->ids = malloc((size_t)(p->cap ? p->cap : 1) * sizeof(int32_t));
    memcpy(q->ids, p->ids, (size_t)p->n * sizeof(int32_t));
    return q;
}

static void free_history(history *h) {
    for (int k = 0; k < h->n; k++) free(h->p[k]->ids), free(h->p[k]);
}

typedef struct sess_set {
    qvlm_cache *cache;
    qvlm_session *s[4];
} sess_set;

static qvlm_status open_sessions(bench_ctx *b, sess_set *ss, int n, qvlm_error *err) {
    memset(ss, 0, sizeof(*ss));
    qvlm_status rc = qvlm_model_cache_create(b->m, &b->cc, &ss->cache, err);
    qvlm_session_params sp = {.cache = ss->cache};
    for (int i = 0; !rc && i < n; i++) rc = qvlm_session_create(b->m, &sp, &ss->s[i], err);
    return rc;
}

static void close_sessions(sess_set *ss) {
    for (int i = 0; i < 4; i++) qvlm_session_destroy(ss->s[i]);
    if (ss->cache) {
        qvlm_error e;
        qvlm_cache_flush(ss->cache, &e);
    }
    qvlm_cache_destroy(ss->cache);
}

/* multiturn (and restart): 4 turns, each adding one image (448x448, then 1024x768) and ~40 words. */
static qvlm_status sc_multiturn(bench_ctx *b, int n_turns, const char *tag, qvlm_error *err) {
    sess_set ss;
    history h = {0};
    qvlm_status rc = open_sessions(b, &ss, 1, err);
    prompt p = {0};
    b->rng = 42; /* the same conversation every time (restart replays it) */
    int sizes[2][2] = {{448, 448}, {1024, 768}};
    for (int t = 0; !rc && t < n_turns; t++) {
        next_turn(b, &p, t == 0);
        words(b, &p, 20);
        image_block(b, &p, add_image(b, sizes[t % 2][0], sizes[t % 2][1]));
        words(b, &p, 20);
        gen_prompt(b, &p);
        char label[16];
        snprintf(label, sizeof(label), "%s%d", tag, t + 1);
        prompt *q = clone(&p);
        rc = run_turn(b, ss.s[0], &h, q, label, err);
        if (rc) free(q->ids), free(q);
    }
    free(p.ids);
    free_history(&h);
    close_sessions(&ss);
    return rc;
}

/* interleaved: conversations A and B take turns (A1 B1 A2 B2 ...), each in its own session. */
static qvlm_status sc_interleaved(bench_ctx *b, qvlm_error *err) {
    sess_set ss;
    history h = {0};
    qvlm_status rc = open_sessions(b, &ss, 2, err);
    prompt p[2] = {{0}, {0}};
    for (int t = 0; !rc && t < 3; t++)
        for (int c = 0; !rc && c < 2; c++) {
            next_turn(b, &p[c], t == 0);
            words(b, &p[c], 20);
            image_block(b, &p[c], add_image(b, 448, 448));
            words(b, &p[c], 20);
            gen_prompt(b, &p[c]);
            char label[16];
            snprintf(label, sizeof(label), "%c%d", 'A' + c, t + 1);
            prompt *q = clone(&p[c]);
            rc = run_turn(b, ss.s[c], &h, q, label, err);
            if (rc) free(q->ids), free(q);
        }
    free(p[0].ids), free(p[1].ids);
    free_history(&h);
    close_sessions(&ss);
    return rc;
}

/* edit: a 1024x768 image and a question; the user edits the text after the image and resends. */
static qvlm_status sc_edit(bench_ctx *b, qvlm_error *err) {
    sess_set ss;
    history h = {0};
    qvlm_status rc = open_sessions(b, &ss, 1, err);
    prompt p = {0};
    next_turn(b, &p, true);
    words(b, &p, 10);
    image_block(b, &p, add_image(b, 1024, 768));
    int64_t after_image = p.n;
    words(b, &p, 20);
    gen_prompt(b, &p);
    prompt *q = clone(&p);
    if (!rc) rc = run_turn(b, ss.s[0], &h, q, "1", err);
    p.n = after_image;
    words(b, &p, 20);
    gen_prompt(b, &p);
    q = clone(&p);
    if (!rc) rc = run_turn(b, ss.s[0], &h, q, "2", err);
    free(p.ids);
    free_history(&h);
    close_sessions(&ss);
    return rc;
}

/* reimage: a new conversation sends an image an earlier conversation already sent. */
static qvlm_status sc_reimage(bench_ctx *b, qvlm_error *err) {
    sess_set ss;
    history h = {0};
    qvlm_status rc = open_sessions(b, &ss, 2, err);
    int im = add_image(b, 1024, 768);
    for (int c = 0; !rc && c < 2; c++) {
        prompt p = {0};
        next_turn(b, &p, true);
        words(b, &p, 15);
        image_block(b, &p, im);
        words(b, &p, 20);
        gen_prompt(b, &p);
        prompt *q = clone(&p);
        rc = run_turn(b, ss.s[c], &h, q, c ? "B1" : "A1", err);
        free(p.ids);
    }
    free_history(&h);
    close_sessions(&ss);
    return rc;
}

/* tailedit: turn 2 adds an image and ~3000 words; turn 3 resends it with the last ~20 words changed. */
static qvlm_status sc_tailedit(bench_ctx *b, qvlm_error *err) {
    sess_set ss;
    history h = {0};
    qvlm_status rc = open_sessions(b, &ss, 1, err);
    prompt p = {0};
    next_turn(b, &p, true);
    words(b, &p, 30);
    gen_prompt(b, &p);
    prompt *q = clone(&p);
    if (!rc) rc = run_turn(b, ss.s[0], &h, q, "1", err);
    next_turn(b, &p, false);
    image_block(b, &p, add_image(b, 448, 448));
    words(b, &p, 2980);
    int64_t keep = p.n;
    words(b, &p, 20);
    gen_prompt(b, &p);
    q = clone(&p);
    if (!rc) rc = run_turn(b, ss.s[0], &h, q, "2", err);
    p.n = keep;
    words(b, &p, 20);
    gen_prompt(b, &p);
    q = clone(&p);
    if (!rc) rc = run_turn(b, ss.s[0], &h, q, "3", err);
    free(p.ids);
    free_history(&h);
    close_sessions(&ss);
    return rc;
}

qvlm_status qvlm_bench_scenario(qvlm_model *m, const char *name, const qvlm_cache_config *cc, json_t **out,
                                qvlm_error *err) {
    bench_ctx b = {.m = m, .cc = *cc, .rng = 7, .turns = json_array()};
    b.vision_start = m->cfg.vision_start_token_id, b.vision_end = m->cfg.vision_end_token_id;
    b.pad = m->cfg.image_token_id;
    qvlm_status rc;
    if (!m->cfg.vision.present) rc = qvlm_errorf(err, QVLM_E_UNSUPPORTED, "scenarios need a vision model");
    else if ((rc = warm_up(&b, err))) {
    } else if (strcmp(name, "multiturn") == 0) rc = sc_multiturn(&b, 4, "", err);
    else if (strcmp(name, "restart") == 0) {
        if (!cc->dir) return qvlm_errorf(err, QVLM_E_INVALID, "the restart scenario needs --cache-dir");
        /* First run fills the disk tier; its numbers are not the scenario's. */
        json_t *first = b.turns;
        b.turns = json_array();
        rc = sc_multiturn(&b, 4, "warm", err);
        json_decref(b.turns);
        b.turns = first;
        for (int i = 0; i < b.n_imgs; i++) free(b.imgs[i].rgb);
        b.n_imgs = 0;
        /* "A new process": every in-memory structure is rebuilt from the directory. */
        if (!rc) rc = sc_multiturn(&b, 4, "", err);
    } else if (strcmp(name, "interleaved") == 0) rc = sc_interleaved(&b, err);
    else if (strcmp(name, "edit") == 0) rc = sc_edit(&b, err);
    else if (strcmp(name, "reimage") == 0) rc = sc_reimage(&b, err);
    else if (strcmp(name, "tailedit") == 0) rc = sc_tailedit(&b, err);
    else rc = qvlm_errorf(err, QVLM_E_INVALID, "unknown scenario '%s' (multiturn, interleaved, edit, reimage, restart, tailedit)", name);
    for (int i = 0; i < b.n_imgs; i++) free(b.imgs[i].rgb);
    if (rc) {
        json_decref(b.turns);
        return rc;
    }
    *out = json_pack("{s:s, s:f, s:f, s:o}", "scenario", name, "cache_gb", (double)cc->budget_bytes / (1u << 30),
                     "cache_host_gb", (double)cc->host_budget_bytes / (1u << 30), "turns", b.turns);
    return QVLM_OK;
}
