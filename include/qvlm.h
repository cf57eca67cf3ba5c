/* qvlm.h - public C API of qvlm, an inference engine for Qwen3.5 vision-language models.
 *
 * Conventions (see docs/c-style in the team docs):
 *  - Every fallible call returns qvlm_status: 0 (QVLM_OK) on success, a negative code on
 *    failure, and takes `qvlm_error *err` last. On failure err->msg names the file, tensor,
 *    field or request part that was wrong. `err` may be NULL.
 *  - Opaque objects come in create/destroy pairs; destroy(NULL) is a no-op.
 *  - Pointer arguments are borrowed for the duration of the call unless stated otherwise.
 */
#ifndef QVLM_H
#define QVLM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One table generates the enum, qvlm_status_name() and qvlm_status_text(). */
#define QVLM_STATUS_MAP(X)                                              \
    X(OK, 0, "ok")                                                      \
    X(E_IO, -1, "i/o error")                                            \
    X(E_CORRUPT, -2, "corrupt or malformed input")                      \
    X(E_NOMEM, -3, "out of memory")                                     \
    X(E_INVALID, -4, "invalid argument")                                \
    X(E_UNSUPPORTED, -5, "unsupported")                                 \
    X(E_NOT_FOUND, -6, "not found")                                     \
    X(E_LIMIT, -7, "limit exceeded")                                    \
    X(E_BUSY, -8, "busy")                                               \
    X(E_CANCELLED, -9, "cancelled")                                     \
    X(E_MISMATCH, -10, "mismatch")                                      \
    X(E_INTERNAL, -11, "internal error")

typedef enum qvlm_status {
#define QVLM_X_ENUM(name, value, text) QVLM_##name = value,
    QVLM_STATUS_MAP(QVLM_X_ENUM)
#undef QVLM_X_ENUM
} qvlm_status;

/* Caller-owned error buffer; meaningful only after a call returned an error. */
typedef struct qvlm_error {
    qvlm_status code;
    char msg[1024];
} qvlm_error;

const char *qvlm_status_name(qvlm_status code); /* "E_CORRUPT" */
const char *qvlm_status_text(qvlm_status code); /* "corrupt or malformed input" */

/* ==== Models ================================================================================ */

typedef struct qvlm_model qvlm_model;     /* a loaded checkpoint; immutable, shared by sessions */
typedef struct qvlm_session qvlm_session; /* one conversation's state; one thread at a time */

typedef enum qvlm_device { QVLM_DEVICE_CPU = 0, QVLM_DEVICE_CUDA = 1 } qvlm_device;
typedef enum qvlm_precision_mode {
    QVLM_PRECISION_F32 = 0, /* f32 activations: matches transformers' float32 run */
    QVLM_PRECISION_BF16 = 1 /* bf16 activations into the matrix products, f32 sums: fast */
} qvlm_precision_mode;

typedef void (*qvlm_progress_fn)(void *user, const char *stage, int64_t done, int64_t total);

typedef enum qvlm_weight_quant {
    QVLM_QUANT_NONE = 0, /* weights as stored (bf16 in the Hub checkpoints) */
    QVLM_QUANT_Q8_0 = 1  /* text-tower matrix weights quantised to Q8_0 at load (CPU only) */
} qvlm_weight_quant;

typedef struct qvlm_model_params {
    qvlm_device device;
    int n_threads;                 /* CPU threads; 0 = all online CPUs */
    qvlm_precision_mode precision;
    qvlm_progress_fn progress;     /* optional: stage "load", weight bytes bound / total */
    void *progress_user;
    qvlm_weight_quant quant;       /* load-time quantisation; QVLM_QUANT_NONE by default */
    bool mmap_weights;             /* CPU: read the text tower's matrices from the mapped checkpoint
                                      instead of copying them at load into memory backed by huge
                                      pages (the copy loads slower and takes its own memory; decode,
                                      which streams those matrices, runs ~10% faster from it). Without
                                      it the copy is made when the weights fit in available memory. */
} qvlm_model_params;

/* Defaults: CPU, all cores, f32. */
void qvlm_model_params_default(qvlm_model_params *p);

/* Load the Hub checkpoint directory `dir` (config.json, *.safetensors[.index.json],
 * generation_config.json). Errors: QVLM_E_IO (a file cannot be read), QVLM_E_CORRUPT (a file
 * is malformed or disagrees with config.json; the message names the file and tensor/field),
 * QVLM_E_UNSUPPORTED (unknown model_type, dtype, ...), QVLM_E_NOMEM. On failure *out is NULL. */
qvlm_status qvlm_model_load(const char *dir, const qvlm_model_params *p, qvlm_model **out, qvlm_error *err);
void qvlm_model_destroy(qvlm_model *m); /* every session of m must be destroyed first */
int32_t qvlm_model_vocab_size(const qvlm_model *m);
/* The context length the model was trained for (config.json max_position_embeddings). */
int64_t qvlm_model_n_ctx_train(const qvlm_model *m);
/* End-of-sequence ids (generation_config.json first, then config.json); returns their count. */
int qvlm_model_eos_ids(const qvlm_model *m, const int32_t **ids);

/* ==== The cross-turn cache ================================================================== */

/* One cache serves every session of a model: exact checkpoints of the sequence state found by
 * token ids and image content hashes, and the vision features of every image seen, under one
 * memory budget; optionally persisted in a directory (bound to the model's fingerprint). */
typedef struct qvlm_cache qvlm_cache;

typedef struct qvlm_cache_config {
    size_t budget_bytes;      /* memory for checkpoints, shared KV blocks and image features
                               * (the backend's memory: device memory with --backend cuda) */
    const char *dir;          /* disk tier directory, or NULL */
    size_t disk_budget_bytes; /* 0 = 4 x the larger of budget_bytes and host_budget_bytes */
    size_t host_budget_bytes; /* host-RAM tier below budget_bytes and above the disk: what is
                               * evicted from device memory waits here (0 = none; useful with a
                               * GPU backend, where budget_bytes is device memory) */
} qvlm_cache_config;

/* Create a cache for `m` (kept; it must outlive the cache). */
qvlm_status qvlm_model_cache_create(qvlm_model *m, const qvlm_cache_config *cfg, qvlm_cache **out, qvlm_error *err);
void qvlm_cache_destroy(qvlm_cache *c); /* all sessions using it must be destroyed first */
/* Write everything not yet on disk (disk tier only). */
qvlm_status qvlm_cache_flush(qvlm_cache *c, qvlm_error *err);

/* ==== Sessions ============================================================================== */

typedef struct qvlm_session_params {
    int64_t max_batch;        /* tokens per forward call of a prefill (a multiple of 64); 0 = 512 */
    int64_t max_image_pixels; /* images with more pixels are refused before decoding; 0 = 8192^2 */
    qvlm_cache *cache;        /* shared cache (kept), or NULL for none */
    uint64_t cache_salt;      /* isolation key: sessions only share cache entries with equal salts */
    int64_t checkpoint_interval; /* also checkpoint long prefills every this many tokens; 0 = 1024 */
    int64_t n_ctx;            /* context limit in tokens (0 = none): a prompt that leaves no room for
                                 one generated token fails with QVLM_E_LIMIT before any image is
                                 encoded, and generation stops when the context is full */
} qvlm_session_params;

/* Create a session on `m` (kept; it must outlive the session). */
qvlm_status qvlm_session_create(qvlm_model *m, const qvlm_session_params *p, qvlm_session **out, qvlm_error *err);
void qvlm_session_destroy(qvlm_session *s);
/* Forget everything fed so far. */
void qvlm_session_reset(qvlm_session *s);
/* Append text tokens (prefill). Each gets the next text position on all three M-RoPE axes.
 * Errors: QVLM_E_INVALID (an id outside the vocabulary: nothing is fed), QVLM_E_NOMEM.
 * On failure the session is unchanged. */
qvlm_status qvlm_session_feed_tokens(qvlm_session *s, const int32_t *ids, size_t n, qvlm_error *err);
/* An image for a prompt: encoded bytes in memory (PNG, JPEG or WebP), a file, or decoded
 * pixels (8-bit RGB, row-major, 3 bytes a pixel). The first that is set is used: data, rgb,
 * path. Borrowed for the call. */
typedef struct qvlm_image_input {
    const char *path;
    const uint8_t *data; /* encoded bytes */
    size_t n_bytes;
    const uint8_t *rgb;  /* [height][width][3] */
    int32_t width, height;
} qvlm_image_input;

/* Append a multimodal prompt piece: `ids` with one placeholder per image, in order (a single
 * image-pad token, as chat templates write it, or a pad run already as long as the image
 * needs). Images are decoded, preprocessed, run through the vision tower, and their features
 * replace the pad rows; positions continue the session's M-RoPE positions.
 * Errors: QVLM_E_MISMATCH (placeholders and images disagree), QVLM_E_CORRUPT / QVLM_E_LIMIT /
 * QVLM_E_UNSUPPORTED (an image cannot be used; the message says which and why),
 * QVLM_E_INVALID, QVLM_E_NOMEM. On failure the session is unchanged. */
qvlm_status qvlm_session_feed(qvlm_session *s, const int32_t *ids, size_t n, const qvlm_image_input *images,
                              size_t n_images, qvlm_error *err);

/* Set the session to a whole prompt (in a chat: the entire conversation so far, as clients
 * resend it), with its images in order (placeholders as for qvlm_session_feed). The longest
 * prefix the session or the cache already holds is reused exactly: a checkpoint restores the
 * recurrent state and shares the KV blocks, images inside it are not touched, later images are
 * looked up in the vision-feature cache, and only the rest is prefilled. The result (logits,
 * state) equals prefilling the whole prompt from scratch. Checkpoints are taken after every
 * image, near the prompt's end and along long prefills.
 * Errors as qvlm_session_feed, and QVLM_E_LIMIT for a prompt longer than the session's n_ctx
 * allows ("prompt: ..."). On failure the session is empty (reset). */
qvlm_status qvlm_session_prompt(qvlm_session *s, const int32_t *ids, size_t n, const qvlm_image_input *images,
                                size_t n_images, qvlm_error *err);

/* What the last qvlm_session_prompt did. */
typedef struct qvlm_prompt_stats {
    int64_t prompt_tokens;   /* after placeholder expansion */
    int64_t reused_tokens;   /* not recomputed: restored from the session or the cache */
    int64_t prefilled_tokens;
    int images_total;        /* images in the prompt */
    int images_in_prefix;    /* inside the reused prefix: not touched at all */
    int images_from_feature_cache; /* after it, but their features were cached */
    int images_encoded;      /* run through the vision tower */
    int checkpoints_made;
    double vision_ms, prefill_ms, total_ms;
} qvlm_prompt_stats;
void qvlm_session_prompt_stats(const qvlm_session *s, qvlm_prompt_stats *out);

/* An image's place in the last prompt: tokens [start, end) from <|vision_start|> to just past
 * <|vision_end|>, its patch grid and its content hash. */
typedef struct qvlm_image_span_info {
    int64_t start, end;
    int32_t grid_t, grid_h, grid_w;
    uint64_t hash_lo, hash_hi;
} qvlm_image_span_info;
/* The spans of the last prompt; returns their count, *spans valid until the next prompt. */
int64_t qvlm_session_image_spans(const qvlm_session *s, const qvlm_image_span_info **spans);

/* Cache statistics. */
typedef struct qvlm_cache_counters {
    uint64_t lookups, hits, reused_tokens, snapshots, evictions, vision_hits, vision_misses;
    uint64_t disk_hits, disk_writes, disk_skipped;
    size_t bytes, budget_bytes, disk_bytes;
    int64_t checkpoints, images;
    uint64_t host_hits; /* of disk_hits, from the host-RAM tier */
    size_t host_bytes;
} qvlm_cache_counters;
void qvlm_cache_counters_get(qvlm_cache *c, qvlm_cache_counters *out);

/* Ask the session's running prompt or generation to stop as soon as possible (between forward
 * batches or tokens); it then returns QVLM_E_CANCELLED and the session is reset. Safe to call
 * from any thread (a signal handler should set its own flag and call this from a thread). */
void qvlm_session_cancel(qvlm_session *s);

/* Progress of long work, for front ends (qvlm_progress_fn, above): stage is "vision" (images
 * done/total) or "prefill" (tokens done/total). Called on the session's thread; keep it short.
 * NULL turns it off. */
void qvlm_session_set_progress(qvlm_session *s, qvlm_progress_fn fn, void *user);

/* Logits [vocab] after the last token fed, or NULL before any (or when reading them back from
 * the backend fails); valid until the next call. */
const float *qvlm_session_logits(qvlm_session *s);
/* Tokens in the session's state. */
int64_t qvlm_session_n_tokens(const qvlm_session *s);

/* ==== Text ================================================================================== */

/* The model's tokenizer (tokenizer.json in its directory). Without one these return
 * QVLM_E_UNSUPPORTED. Caller frees *ids / *text. Thread-safe. */
qvlm_status qvlm_tokenize(const qvlm_model *m, const char *text, size_t n_bytes, int32_t **ids, size_t *n_ids,
                          qvlm_error *err);
qvlm_status qvlm_detokenize(const qvlm_model *m, const int32_t *ids, size_t n_ids, char **text, size_t *n_bytes,
                            qvlm_error *err);
int32_t qvlm_token_id(const qvlm_model *m, const char *token); /* -1 if absent */
bool qvlm_token_is_special(const qvlm_model *m, int32_t id);

/* Token-by-token decoding that never splits a UTF-8 character: each push returns the text now
 * safe to print (valid until the next call); flush returns what is held back. */
typedef struct qvlm_text_stream qvlm_text_stream;
qvlm_status qvlm_text_stream_create(const qvlm_model *m, qvlm_text_stream **out, qvlm_error *err);
qvlm_status qvlm_text_stream_push(qvlm_text_stream *s, int32_t id, const char **text, size_t *n_bytes,
                                  qvlm_error *err);
qvlm_status qvlm_text_stream_flush(qvlm_text_stream *s, const char **text, size_t *n_bytes, qvlm_error *err);
void qvlm_text_stream_destroy(qvlm_text_stream *s);

/* ==== Chat ================================================================================== */

typedef struct qvlm_chat_options {
    const char *tools_json;    /* JSON array of tool definitions, or NULL */
    int enable_thinking;       /* -1: the template's default; 0: off; 1: on */
    bool add_vision_id;        /* "Picture N: " before each image */
    bool no_generation_prompt; /* leave out the assistant header (default: add it) */
    const char *allow_dir;     /* local image paths and file:// URLs only under this; NULL: none */
    const char *extra_json;    /* more template variables (a JSON object), or NULL */
} qvlm_chat_options;

/* Render OpenAI-style messages (a JSON array: role, content as a string or parts of type
 * "text", "image_url" {url} or "image" {image}, tool_calls, reasoning_content ...) with the
 * model's own chat template, tokenize, gather the images in order (data: URIs with base64
 * PNG/JPEG/WebP, or files under allow_dir), and make the whole as the session's prompt with
 * qvlm_session_prompt, so that every turn reuses what the cache holds.
 * Errors name the request part ("messages[2].content[1].image_url.url: ..."): QVLM_E_INVALID
 * (bad JSON or structure, an image source that is not allowed, the template raised),
 * QVLM_E_UNSUPPORTED (video, remote URLs, no template or tokenizer), and those of
 * qvlm_session_prompt. */
qvlm_status qvlm_session_chat(qvlm_session *s, const char *messages_json, size_t n_bytes, const qvlm_chat_options *o,
                              qvlm_error *err);

/* ==== Generation ============================================================================ */

typedef struct qvlm_sampling {
    float temperature; /* <= 0: greedy */
    int32_t top_k;     /* 0: off */
    float top_p;       /* 1: off */
    float min_p;       /* 0: off */
    uint64_t seed;
} qvlm_sampling;

/* Called with every generated token; return nonzero to stop after it. */
typedef int (*qvlm_token_fn)(void *user, int32_t token);

/* Generate up to max_tokens tokens after what was fed, feeding each one back. Stops at an
 * end-of-sequence id of the model (the id is reported and fed), at max_tokens, when the
 * session's n_ctx is full, or when `on_token` asks. Errors: QVLM_E_INVALID (no logits yet, bad sampling values), QVLM_E_NOMEM. */
qvlm_status qvlm_session_generate(qvlm_session *s, const qvlm_sampling *p, int max_tokens, qvlm_token_fn on_token,
                                  void *user, qvlm_error *err);

/* ==== Replies =============================================================================== */

/* An incremental parser of a Qwen3.5 reply, fed the generated text piece by piece as it
 * streams (qvlm_text_stream output). It separates the thinking (<think> ... </think>; with
 * thinking on, the generation prompt has already opened <think>) from the answer, parses tool
 * calls
 *     <tool_call>\n<function=NAME>\n<parameter=ARG>\nVALUE\n</parameter>\n</function>\n</tool_call>
 * into a name and a JSON object of arguments (a VALUE that is valid JSON becomes that JSON
 * value, else a string; a parameter whose schema in `tools_json` says "string" stays a
 * string), and cuts the reply at the first stop string.
 * Garbled output never fails: a tool-call block that does not parse is passed on as answer
 * text, tags out of place are text, and every character fed reaches the reasoning, the answer
 * or a tool call, except the tags themselves, the matched stop string and what follows it,
 * and whitespace at the edges of the reasoning and the answer (the template writes
 * "<think>\n...\n</think>\n\n"). Text that may be the start of a tag or a stop string is held
 * back until the next piece decides. Not thread-safe; one reply per generation. */
typedef struct qvlm_reply qvlm_reply;

typedef struct qvlm_reply_options {
    bool in_thinking;        /* the prompt ends inside <think> (Qwen3.5 with thinking on) */
    bool parse_tool_calls;   /* parse <tool_call> blocks (else they stay answer text) */
    const char *tools_json;  /* the request's tools (JSON array), for argument types; or NULL */
    const char *const *stop; /* [n_stop] stop strings (copied); empty ones are ignored */
    size_t n_stop;
} qvlm_reply_options;

/* What one push or finish made final. The pointers stay valid until the next call. */
typedef struct qvlm_reply_delta {
    const char *reasoning; /* [n_reasoning] new thinking text */
    size_t n_reasoning;
    const char *content;   /* [n_content] new answer text */
    size_t n_content;
    int first_tool_call;   /* tool calls [first_tool_call, first_tool_call + n_tool_calls) are new */
    int n_tool_calls;
    bool stopped;          /* a stop string matched: the reply is complete; stop generating */
} qvlm_reply_delta;

typedef struct qvlm_tool_call {
    const char *name;
    const char *arguments; /* a JSON object, compact */
} qvlm_tool_call;

/* Errors: QVLM_E_INVALID (tools_json is not a JSON array), QVLM_E_NOMEM. */
qvlm_status qvlm_reply_create(const qvlm_reply_options *o, qvlm_reply **out, qvlm_error *err);
void qvlm_reply_destroy(qvlm_reply *r);
/* Feed the next piece of generated text (UTF-8). After `stopped` or finish, pieces are
 * ignored. Errors: QVLM_E_NOMEM only; the reply is then unusable. */
qvlm_status qvlm_reply_push(qvlm_reply *r, const char *text, size_t n_bytes, qvlm_reply_delta *out, qvlm_error *err);
/* The generation ended: release what was held back (an unfinished tool call that parses
 * counts; one that does not becomes answer text). */
qvlm_status qvlm_reply_finish(qvlm_reply *r, qvlm_reply_delta *out, qvlm_error *err);
/* Everything so far: the thinking, the answer, the tool calls (valid until the next call). */
const char *qvlm_reply_reasoning(const qvlm_reply *r, size_t *n_bytes);
const char *qvlm_reply_content(const qvlm_reply *r, size_t *n_bytes);
int qvlm_reply_tool_calls(const qvlm_reply *r, const qvlm_tool_call **calls);

/* Why a reply ended. */
typedef enum qvlm_finish {
    QVLM_FINISH_STOP = 0,   /* an end-of-sequence token or a stop string */
    QVLM_FINISH_LENGTH,     /* max_tokens, or the session's n_ctx is full */
    QVLM_FINISH_ABORTED,    /* the delta callback asked to stop */
    QVLM_FINISH_CANCELLED   /* qvlm_session_cancel */
} qvlm_finish;

typedef struct qvlm_reply_stats {
    int n_tokens;            /* generated, the end-of-sequence token included */
    qvlm_finish finish;
    double first_token_ms;   /* from the call to the first token sampled */
    double generate_ms;      /* the whole call */
} qvlm_reply_stats;

/* Called with every delta that carries something (text, tool calls, or stopped); return
 * nonzero to stop generating. */
typedef int (*qvlm_reply_fn)(void *user, const qvlm_reply_delta *d);

/* Generate a chat reply after a prompt (qvlm_session_chat): qvlm_session_generate, every
 * token decoded with a qvlm_text_stream (special tokens such as <|im_end|> hidden, as
 * skip_special_tokens does) and fed to `r`, each delta passed to `on_delta`, and at the end
 * the reply finished. Generation stops at a stop string as well. *stats (may be NULL) says
 * why it ended. A cancel (qvlm_session_cancel) is not an error here: what was generated is in
 * `r`, and stats->finish is QVLM_FINISH_CANCELLED. Errors: those of qvlm_session_generate,
 * QVLM_E_UNSUPPORTED (no tokenizer). */
qvlm_status qvlm_session_generate_reply(qvlm_session *s, const qvlm_sampling *p, int max_tokens, qvlm_reply *r,
                                        qvlm_reply_fn on_delta, void *user, qvlm_reply_stats *stats, qvlm_error *err);

#ifdef __cplusplus
}
#endif
#endif /* QVLM_H */
