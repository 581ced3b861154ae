/* nccl.c — libhyperpod's NCCL helper: abort, poll and re-create a
 * communicator across an in-process restart. libnccl.so.2 is opened with
 * dlopen on first use and never linked, and nccl.h is not included: the few
 * types below are NCCL's stable ABI (ncclUniqueId is 128 bytes passed by
 * value, ncclComm_t an opaque pointer, ncclResult_t an int enum). Without
 * NCCL every call answers -ENOSYS; nothing here prints or aborts. */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hyperpod.h"

struct nccl_unique_id {
	char internal[HP_NCCL_UNIQUE_ID_BYTES];
};
typedef int nccl_result_t;
typedef void *nccl_comm_t;

_Static_assert(sizeof(struct nccl_unique_id) == 128, "ncclUniqueId is 128");

enum {
	NCCL_SUCCESS = 0,
	NCCL_UNHANDLED_CUDA_ERROR = 1,
	NCCL_SYSTEM_ERROR = 2,
	NCCL_INTERNAL_ERROR = 3,
	NCCL_INVALID_ARGUMENT = 4,
	NCCL_INVALID_USAGE = 5,
	NCCL_REMOTE_ERROR = 6,
	NCCL_IN_PROGRESS = 7,
};

static struct {
	pthread_once_t once;
	void *handle;
	char why[512];
	nccl_result_t (*get_unique_id)(struct nccl_unique_id *);
	nccl_result_t (*comm_init_rank)(nccl_comm_t *, int,
					struct nccl_unique_id, int);
	nccl_result_t (*comm_abort)(nccl_comm_t);
	nccl_result_t (*comm_get_async_error)(nccl_comm_t, nccl_result_t *);
	const char *(*get_error_string)(nccl_result_t);
} nccl = {.once = PTHREAD_ONCE_INIT};

/* Resolves one symbol; false (with why set) when the library lacks it. */
static bool sym(const char *name, void *fnptr)
{
	void *p = dlsym(nccl.handle, name);
	if (!p) {
		snprintf(nccl.why, sizeof(nccl.why),
			 "NCCL not available: %s has no %s",
			 getenv("HP_NCCL_LIBRARY") ? getenv("HP_NCCL_LIBRARY")
						   : "libnccl.so.2",
			 name);
		return false;
	}
	/* POSIX guarantees a data pointer from dlsym converts to a function
	 * pointer; memcpy says so without a pedantic cast warning. */
	memcpy(fnptr, &p, sizeof(p));
	return true;
}

static void load(void)
{
	const char *name = getenv("HP_NCCL_LIBRARY");
	if (!name || !*name)
		name = "libnccl.so.2";
	nccl.handle = dlopen(name, RTLD_NOW | RTLD_LOCAL);
	if (!nccl.handle) {
		const char *e = dlerror();
		snprintf(nccl.why, sizeof(nccl.why), "NCCL not available: %s",
			 e ? e : name);
		return;
	}
	if (!sym("ncclGetUniqueId", &nccl.get_unique_id) ||
	    !sym("ncclCommInitRank", &nccl.comm_init_rank) ||
	    !sym("ncclCommAbort", &nccl.comm_abort) ||
	    !sym("ncclCommGetAsyncError", &nccl.comm_get_async_error) ||
	    !sym("ncclGetErrorString", &nccl.get_error_string)) {
		dlclose(nccl.handle);
		nccl.handle = NULL;
	}
}

static bool loaded(void)
{
	pthread_once(&nccl.once, load);
	return nccl.handle != NULL;
}

static int from_nccl(nccl_result_t r)
{
	switch (r) {
	case NCCL_SUCCESS: return 0;
	case NCCL_INVALID_ARGUMENT:
	case NCCL_INVALID_USAGE: return -EINVAL;
	case NCCL_REMOTE_ERROR: return -ECONNRESET;
	case NCCL_IN_PROGRESS: return -EINPROGRESS;
	default: return -EIO;
	}
}

bool hp_nccl_available(char *why, size_t why_len)
{
	bool ok = loaded();
	if (why && why_len > 0)
		snprintf(why, why_len, "%s", ok ? "NCCL available" : nccl.why);
	return ok;
}

int hp_nccl_get_unique_id(void *id128)
{
	if (!loaded())
		return -ENOSYS;
	struct nccl_unique_id id;
	int rc = from_nccl(nccl.get_unique_id(&id));
	if (rc == 0)
		memcpy(id128, &id, sizeof(id));
	return rc;
}

int hp_nccl_comm_init_rank(void **comm, int nranks, const void *id128,
			   int rank)
{
	if (!loaded())
		return -ENOSYS;
	if (!comm || !id128 || nranks < 1 || rank < 0 || rank >= nranks)
		return -EINVAL;
	struct nccl_unique_id id;
	memcpy(&id, id128, sizeof(id));
	nccl_comm_t c = NULL;
	int rc = from_nccl(nccl.comm_init_rank(&c, nranks, id, rank));
	*comm = rc == 0 ? c : NULL;
	return rc;
}

int hp_nccl_comm_abort(void *comm)
{
	if (!loaded())
		return -ENOSYS;
	return from_nccl(nccl.comm_abort(comm));
}

int hp_nccl_async_error(void *comm, int *err)
{
	if (!loaded())
		return -ENOSYS;
	nccl_result_t r = NCCL_SUCCESS;
	int rc = from_nccl(nccl.comm_get_async_error(comm, &r));
	if (err)
		*err = r;
	return rc;
}

const char *hp_nccl_strerror(int nccl_result)
{
	if (!loaded())
		return "NCCL not available";
	return nccl.get_error_string(nccl_result);
}

int hp_nccl_unique_id_hex(const void *id128, char *hex, size_t hex_len)
{
	static const char digits[] = "0123456789abcdef";
	const unsigned char *p = id128;
	if (hex_len < HP_NCCL_UNIQUE_ID_HEX_LEN + 1)
		return -ENOSPC;
	for (size_t i = 0; i < HP_NCCL_UNIQUE_ID_BYTES; i++) {
		hex[2 * i] = digits[p[i] >> 4];
		hex[2 * i + 1] = digits[p[i] & 0xf];
	}
	hex[HP_NCCL_UNIQUE_ID_HEX_LEN] = '\0';
	return 0;
}

static int nibble(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

int hp_nccl_unique_id_from_hex(const char *hex, void *id128)
{
	unsigned char tmp[HP_NCCL_UNIQUE_ID_BYTES];
	if (!hex || strlen(hex) != HP_NCCL_UNIQUE_ID_HEX_LEN)
		return -EINVAL;
	for (size_t i = 0; i < HP_NCCL_UNIQUE_ID_BYTES; i++) {
		int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		tmp[i] = (unsigned char)(hi << 4 | lo);
	}
	memcpy(id128, tmp, sizeof(tmp));
	return 0;
}

int hp_nccl_unique_id_from_env(const struct hp_rank_env *env, void *id128)
{
	const char *hex = hp_rank_env_get(env, HP_NCCL_UNIQUE_ID_ENV);
	if (!hex)
		return -ENOENT;
	return hp_nccl_unique_id_from_hex(hex, id128);
}
