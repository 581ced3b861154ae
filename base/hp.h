/* hp.h — the few macros and attributes every hyperpodrun file shares.
 * Owns nothing at run time; included everywhere, so it must stay tiny and
 * must never pull in a dependency's header. */
#ifndef HP_H
#define HP_H

#include <stdbool.h>
#include <stddef.h>

#define HP_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define HP_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define HP_NORETURN __attribute__((noreturn))
#define HP_UNUSED __attribute__((unused))
#define HP_MIN(a, b) ((a) < (b) ? (a) : (b))
#define HP_MAX(a, b) ((a) > (b) ? (a) : (b))

/* The largest number of workers one agent starts (torchrun has no limit;
 * we cap it so per-rank tables can be fixed arrays). */
#define HP_MAX_LOCAL_WORKERS 256

/* A broken invariant: log where and abort (libinput's "whose bug"). */
#define hp_bug(...) hp_bug_at(__FILE__, __LINE__, __VA_ARGS__)
HP_NORETURN void hp_bug_at(const char *file, int line, const char *fmt, ...)
	HP_PRINTF(3, 4);

/* "SIGKILL" for 9, or "SIG<n>" for a number without a name (base/
 * signame.c; the "SIG<n>" buffer is thread-local). */
const char *hp_signal_name(int sig);

/* A TCP port free right now on loopback, or on every address with
 * any_addr (base/port.c); -errno when none could be had. */
int hp_free_port(bool any_addr);

#endif
