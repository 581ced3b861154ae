/* The arc4random family for the wheel's binary, from getrandom(2).
 *
 * Debian 12's libevent calls glibc's arc4random, which appeared in glibc
 * 2.36; linked against it the binary would not start on Ubuntu 22.04
 * (2.35) or Amazon Linux 2023 (2.34). The wheel links libevent
 * statically, and these definitions satisfy its references before
 * libc.so's can, so no GLIBC_2.36 symbol version is needed
 * (tools/wheel/bundle.py checks). Built only with -Dwheel=true. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/random.h>

void arc4random_buf(void *buf, size_t n);
uint32_t arc4random(void);
uint32_t arc4random_uniform(uint32_t bound);

void arc4random_buf(void *buf, size_t n)
{
	unsigned char *p = buf;
	while (n > 0) {
		ssize_t got = getrandom(p, n, 0);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			abort(); /* glibc's arc4random cannot fail either */
		}
		p += got;
		n -= (size_t)got;
	}
}

uint32_t arc4random(void)
{
	uint32_t v;
	arc4random_buf(&v, sizeof(v));
	return v;
}

uint32_t arc4random_uniform(uint32_t bound)
{
	if (bound < 2)
		return 0;
	/* reject the low values that would bias the modulo */
	uint32_t min = -bound % bound;
	for (;;) {
		uint32_t r = arc4random();
		if (r >= min)
			return r % bound;
	}
}
