/* disk_cache.h - the cache's disk tier (placeholder until the disk format lands). */
#ifndef QVLM_ENGINE_DISK_CACHE_H
#define QVLM_ENGINE_DISK_CACHE_H

#include <stddef.h>

#include "core/status.h"
#include "model/model.h"

typedef struct qvlm_disk_cache qvlm_disk_cache;
qvlm_status qvlm_disk_cache_open(const qvlm_model *m, const char *dir, size_t budget_bytes, qvlm_disk_cache **out,
                                 qvlm_error *err);
void qvlm_disk_cache_close(qvlm_disk_cache *d);

#endif
