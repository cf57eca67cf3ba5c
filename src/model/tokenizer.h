/* tokenizer.h - Hugging Face tokenizer.json: byte-level BPE encode and decode, giving the same
 * ids and text as the `tokenizers` library (qwen35-arch.md §1.5).
 *
 * Pipeline, as `Tokenizer.encode(text, add_special_tokens=False)` runs it:
 *   1. added tokens whose `normalized` is false are matched on the raw text (longest match
 *      first, lstrip/rstrip/single_word honoured);
 *   2. each remaining piece is normalised (NFC for Qwen, via utf8proc) and added tokens whose
 *      `normalized` is true are matched on the result;
 *   3. the pre-tokenizer splits each piece with the regex read from the file (PCRE2, JIT), then
 *      ByteLevel maps its bytes to the GPT-2 byte alphabet;
 *   4. BPE merges each word by merge rank (results cached, so repeated words are not re-merged).
 * Decoding maps tokens back to bytes (ByteLevel decoder) and replaces ill-formed UTF-8 with
 * U+FFFD exactly as Rust's String::from_utf8_lossy does. As in HF tokenizers 0.23, added
 * tokens go through the decoder too, a "normalized" one in its normalised form.
 *
 * Supported structures (anything else is refused at load with a message naming the field):
 *   normalizer:    null, NFC, NFD, NFKC, NFKD, or a Sequence of those
 *   pre_tokenizer: Split (Regex or String pattern, any behaviour) steps followed by one
 *                  ByteLevel step, alone or in a Sequence
 *   model:         BPE (either merges form, ignore_merges, unk_token, fuse_unk, byte_fallback;
 *                  no dropout, no continuing_subword_prefix / end_of_word_suffix)
 *   decoder:       ByteLevel
 *   post_processor is ignored: with add_special_tokens=False it never changes ids.
 *   truncation and padding must be null.
 * Every tokenizer.json is treated as hostile: errors name the file and the field, e.g.
 *   tokenizer.json: model.merges[17]: "Ġt he" names "he", which is not in model.vocab
 *
 * Thread safety: after load, every function taking `const qvlm_tokenizer *` may be called from
 * any number of threads at once (the BPE cache inside is locked).
 */
#ifndef QVLM_MODEL_TOKENIZER_H
#define QVLM_MODEL_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define QVLM_TOKENIZER_MAX_FILE_BYTES ((size_t)128 << 20) /* real files are ~10-40 MB; the
                                                              parsed tree costs ~10x in memory */
#define QVLM_TOKENIZER_MAX_ID ((1 << 22) - 1)             /* 16x the largest real vocabulary */

typedef struct qvlm_tokenizer qvlm_tokenizer;

/* Load a tokenizer.json file. On success the caller owns *out (qvlm_tokenizer_destroy).
 * Returns QVLM_E_IO (cannot read), QVLM_E_LIMIT (file over QVLM_TOKENIZER_MAX_FILE_BYTES),
 * QVLM_E_CORRUPT (malformed JSON or field), QVLM_E_UNSUPPORTED (a structure qvlm does not
 * implement), QVLM_E_NOMEM. On failure *out is NULL. */
qvlm_status qvlm_tokenizer_load(const char *tokenizer_json_path, qvlm_tokenizer **out,
                                qvlm_error *err);

/* Same from JSON text json[0..n_bytes) (need not be NUL-terminated; not kept after the call).
 * `name` names the document in error messages ("tokenizer.json"). */
qvlm_status qvlm_tokenizer_load_buffer(const char *json, size_t n_bytes, const char *name,
                                       qvlm_tokenizer **out, qvlm_error *err);

void qvlm_tokenizer_destroy(qvlm_tokenizer *tok); /* NULL is a no-op */

/* Text text[0..n_bytes) (UTF-8, may contain NUL) -> ids. Special and added tokens written in
 * the text are matched, as HF encode(add_special_tokens=False) does; no BOS/EOS is added.
 * On success the caller owns *ids (free(); NULL when *n_ids == 0).
 * Returns QVLM_E_INVALID (text is not valid UTF-8; the message gives the byte offset),
 * QVLM_E_LIMIT (the pre-tokenizer regex hit its match limit on this text), QVLM_E_NOMEM.
 * On failure *ids is NULL and *n_ids 0. Thread-safe. */
qvlm_status qvlm_tokenizer_encode(const qvlm_tokenizer *tok, const char *text, size_t n_bytes,
                                  int32_t **ids, size_t *n_ids, qvlm_error *err);

/* ids[0..n_ids) -> UTF-8 text, special tokens included (HF decode(skip_special_tokens=False)).
 * On success the caller owns *text (free(); NUL-terminated, the NUL not counted in *n_bytes).
 * Returns QVLM_E_INVALID when an id has no token (the message names its index), QVLM_E_NOMEM.
 * On failure *text is NULL. Thread-safe. */
qvlm_status qvlm_tokenizer_decode(const qvlm_tokenizer *tok, const int32_t *ids, size_t n_ids,
                                  char **text, size_t *n_bytes, qvlm_error *err);

/* Id of a token given in its raw form ("Ġhello", "<|im_end|>"), added tokens first as HF's
 * token_to_id does; -1 if absent. */
int32_t qvlm_tokenizer_find(const qvlm_tokenizer *tok, const char *token);

/* Raw token string of `id` (byte-level form for model tokens, content for added tokens);
 * NULL if the id has no token. Owned by tok, valid until qvlm_tokenizer_destroy. */
const char *qvlm_tokenizer_token(const qvlm_tokenizer *tok, int32_t id);

/* Is `id` an added token marked "special" (e.g. <|im_start|>)? false for unknown ids. */
bool qvlm_tokenizer_is_special(const qvlm_tokenizer *tok, int32_t id);

/* One past the largest id (ids may have gaps; qvlm_tokenizer_token says which exist). */
int32_t qvlm_tokenizer_vocab_size(const qvlm_tokenizer *tok);

/* ---- streaming decode -------------------------------------------------------------------
 * Feed ids one at a time as they are generated; each push returns the text that is now safe
 * to print. Bytes of a multi-byte character split across tokens are held back until the
 * character is complete, so a stream never prints half an emoji. Ill-formed sequences become
 * U+FFFD exactly where qvlm_tokenizer_decode puts them: the concatenation of every push and
 * the final flush equals qvlm_tokenizer_decode of the same ids.
 *
 *   qvlm_detok_stream s;
 *   qvlm_detok_stream_init(&s, tok);
 *   for each id: if (!qvlm_detok_stream_push(&s, id, &p, &n, err)) fwrite(p, 1, n, out);
 *   if (!qvlm_detok_stream_flush(&s, &p, &n, err)) fwrite(p, 1, n, out);
 *   qvlm_detok_stream_free(&s);
 *
 * Special tokens come out as their text, as in qvlm_tokenizer_decode; a caller that wants
 * them hidden checks qvlm_tokenizer_is_special before pushing.
 * The struct lives in caller storage and keeps `tok` (which must outlive it). One stream
 * belongs to one thread at a time; any number of streams may share a tokenizer. */
typedef struct qvlm_detok_stream {
    const qvlm_tokenizer *tok; /* borrowed */
    uint8_t pending[4];        /* start of a character still missing bytes */
    size_t n_pending;          /* 0..3 */
    char *buf;                 /* output of the last push/flush (owned) */
    size_t cap_bytes;
} qvlm_detok_stream;

void qvlm_detok_stream_init(qvlm_detok_stream *s, const qvlm_tokenizer *tok);

/* Append the text of token `id`. *out and *n_out receive the bytes now safe to print (possibly
 * none); they stay valid until the next call on this stream. Returns QVLM_E_INVALID for an
 * id with no token (the stream is then unchanged), QVLM_E_NOMEM. */
qvlm_status qvlm_detok_stream_push(qvlm_detok_stream *s, int32_t id, const char **out,
                                   size_t *n_out, qvlm_error *err);

/* End of stream: held-back bytes of an unfinished character come out as U+FFFD. The stream
 * is then empty and may be reused. Returns QVLM_E_NOMEM only. */
qvlm_status qvlm_detok_stream_flush(qvlm_detok_stream *s, const char **out, size_t *n_out,
                                    qvlm_error *err);

/* Release the stream's buffer (held-back bytes are dropped). Safe on a zeroed struct. */
void qvlm_detok_stream_free(qvlm_detok_stream *s);

#endif /* QVLM_MODEL_TOKENIZER_H */
