/* print-env — prints its whole environment as one JSON object on one line
 * (a single write, so concurrent workers never interleave), then exits with
 * $HP_EXIT or 0. The process tests parse it to check the worker env
 * contract of TORCHRUN.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helper.h"

extern char **environ;

struct buf {
	char *p;
	size_t len, cap;
};

static void put(struct buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (b->len + n + 1 > cap)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p)
			abort();
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void put_json_string(struct buf *b, const char *s, size_t n)
{
	put(b, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[8];
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			put(b, esc, 2);
		} else if (c < 0x20) {
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			put(b, esc, 6);
		} else {
			put(b, (const char *)&s[i], 1);
		}
	}
	put(b, "\"", 1);
}

int main(void)
{
	struct buf b = {0};
	put(&b, "{", 1);
	for (char **e = environ; *e; e++) {
		const char *eq = strchr(*e, '=');
		if (!eq)
			continue;
		if (e != environ)
			put(&b, ", ", 2);
		put_json_string(&b, *e, (size_t)(eq - *e));
		put(&b, ": ", 2);
		put_json_string(&b, eq + 1, strlen(eq + 1));
	}
	put(&b, "}\n", 2);
	helper_write_all(STDOUT_FILENO, b.p, b.len);
	free(b.p);
	return atoi(helper_env("HP_EXIT", "0"));
}
