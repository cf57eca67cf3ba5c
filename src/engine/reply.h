/* reply.h - internals of the reply parser (reply.c) shared with the tool-call block parser
 * (reply_tools.c). The public interface is qvlm_reply_* in include/qvlm.h. */
#ifndef QVLM_ENGINE_REPLY_H
#define QVLM_ENGINE_REPLY_H

#include <jansson.h>

#include "core/status.h"

/* Parse the inside of one <tool_call> ... </tool_call> block (without the tags):
 *     \n<function=NAME>\n<parameter=ARG>\nVALUE\n</parameter>\n...</function>\n
 * Lenient where Qwen3.5 models are sloppy: a parameter may end at the next <parameter= or at
 * </function> without its </parameter>, and </function> may be missing at the very end.
 * `tools` (an array of OpenAI tool definitions, or NULL) keeps parameters typed "string" as
 * strings; other values that parse as JSON become JSON. On success *name and *args_json are
 * fresh strings (the caller frees them). Errors: QVLM_E_INVALID (not a well-formed call, with
 * a message saying where), QVLM_E_NOMEM. */
qvlm_status reply_parse_tool_block(const char *s, size_t n, const json_t *tools, char **name, char **args_json,
                                   qvlm_error *err);

#endif /* QVLM_ENGINE_REPLY_H */
