/* sbuf.c — the growing string of sbuf.h. Doubles its capacity, so a text
 * of n bytes costs O(n) copies; never fails (xrealloc aborts). */
#include "sbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "xalloc.h"

static void grow(struct hp_sbuf *b, size_t more)
{
	if (b->len + more + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < b->len + more + 1)
		cap *= 2;
	b->p = xrealloc(b->p, cap);
	b->cap = cap;
}

void hp_sbuf_add(struct hp_sbuf *b, const char *s, size_t n)
{
	grow(b, n);
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void hp_sbuf_puts(struct hp_sbuf *b, const char *s)
{
	hp_sbuf_add(b, s, strlen(s));
}

void hp_sbuf_printf(struct hp_sbuf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	grow(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void hp_sbuf_repeat(struct hp_sbuf *b, char c, size_t n)
{
	grow(b, n);
	memset(b->p + b->len, c, n);
	b->len += n;
	b->p[b->len] = '\0';
}

char *hp_sbuf_finish(struct hp_sbuf *b)
{
	grow(b, 0);
	b->p[b->len] = '\0';
	return b->p;
}
