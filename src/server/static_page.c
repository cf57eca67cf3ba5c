/* static_page.c - GET /: the chat page (src/server/web/index.html), embedded in the binary at
 * build time (cmake/embed.cmake writes it as a byte array). */
#include "server/server.h"

extern const unsigned char qvlm_web_index_html[];
extern const size_t qvlm_web_index_html_len;

void srv_static_page(srv_response *out) {
    srv_respond_text(out, 200, "text/html; charset=utf-8", (const char *)qvlm_web_index_html, qvlm_web_index_html_len);
}
