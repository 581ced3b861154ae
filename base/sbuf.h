/* sbuf.h — a growing NUL-terminated string, for code that builds text
 * (failure summaries, metrics, the resource-config file, log-rule
 * messages). Part of the base library; allocation aborts (xalloc). */
#ifndef HP_SBUF_H
#define HP_SBUF_H

#include <stddef.h>

#include "hp.h"

/* Zero-initialise ({0}); p is NULL until the first append. */
struct hp_sbuf {
	char *p;
	size_t len, cap;
};

void hp_sbuf_add(struct hp_sbuf *b, const char *s, size_t n);
void hp_sbuf_puts(struct hp_sbuf *b, const char *s);
void hp_sbuf_printf(struct hp_sbuf *b, const char *fmt, ...) HP_PRINTF(2, 3);
/* n copies of c */
void hp_sbuf_repeat(struct hp_sbuf *b, char c, size_t n);
/* The text ("" when nothing was added); the caller frees it. */
char *hp_sbuf_finish(struct hp_sbuf *b);

#endif
