/* xalloc.h — allocation that aborts on exhaustion, so callers carry no
 * NULL-check branches (redis zmalloc, libinput). */
#ifndef HP_XALLOC_H
#define HP_XALLOC_H

#include <stddef.h>

#include "hp.h"

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* xstrdup(NULL) would be a bug; this returns NULL for NULL. */
char *xstrdup_or_null(const char *s);
char *xasprintf(const char *fmt, ...) HP_PRINTF(1, 2);

#endif
