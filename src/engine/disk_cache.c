/* disk_cache.c - the cache's disk tier (see disk_cache.h). */
#include "engine/disk_cache.h"

qvlm_status qvlm_disk_cache_open(const qvlm_model *m, const char *dir, size_t budget_bytes, qvlm_disk_cache **out,
                                 qvlm_error *err) {
    (void)m;
    (void)budget_bytes;
    *out = NULL;
    return qvlm_errorf(err, QVLM_E_UNSUPPORTED, "%s: the disk cache is not built yet", dir);
}

void qvlm_disk_cache_close(qvlm_disk_cache *d) { (void)d; }
