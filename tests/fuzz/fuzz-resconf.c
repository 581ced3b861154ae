/* fuzz-resconf — the resource-config table: hp_resconf_merge and
 * hp_resconf_render (pure), and the reader hp_resconf_new uses on an
 * existing pod_resourceconfig.json.
 *
 * An input that starts with '{' or '[' is that file: it is written to a
 * scratch directory and loaded, and the table loaded must render back to
 * JSON. Any other input is a small script, one command a line:
 *   N <nnodes>          the request's nnodes (decimal, may be anything)
 *   o [<ip>]            an entry of the old table (none: null)
 *   u <rank> [<ip>]     a rankIps entry (none: "")
 *   c <ip> / v <ver>    current_pod_ip / ips_timestamp
 * Checked: a merge succeeds exactly when the ranks and nnodes are within
 * the documented bounds; it gives nnodes entries (or keeps the old table
 * when there are no entries); entry r holds the last update for r; the
 * rendered text is ASCII, is JSON, and gives back each string (unless it
 * was not UTF-8, which becomes U+FFFD). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "rendezvous/resconf.h"
#include "server/server.h"

#define MAX_ENTRIES 256

static char scratch[64];
static char file[128];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	const char *tmp = getenv("TMPDIR");
	snprintf(scratch, sizeof(scratch), "%s/hp-fuzz-resconf-XXXXXX",
		 tmp && strlen(tmp) < 32 ? tmp : "/tmp");
	if (!mkdtemp(scratch))
		abort();
	snprintf(file, sizeof(file), "%s/" HP_RESCONF_FILE, scratch);
	return 0;
}

static void check_string(const cJSON *item, const char *want)
{
	if (!want) {
		FUZZ_CHECK(cJSON_IsNull(item));
		return;
	}
	FUZZ_CHECK(cJSON_IsString(item));
	const char *got = item->valuestring;
	/* A malformed byte is written as U+FFFD; otherwise exact. */
	if (!strstr(got, "\xef\xbf\xbd"))
		FUZZ_CHECK(strcmp(got, want) == 0);
}

static void check_render(char *const *ips, size_t n, const char *cur,
			 const char *ver)
{
	char *text = hp_resconf_render(ips, n, cur, ver);
	FUZZ_CHECK(text != NULL);
	for (const unsigned char *p = (const unsigned char *)text; *p; p++)
		FUZZ_CHECK(*p >= 0x20 && *p < 0x7f);
	cJSON *j = cJSON_Parse(text);
	FUZZ_CHECK(j != NULL);
	const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "ips");
	FUZZ_CHECK(cJSON_IsArray(arr));
	FUZZ_CHECK((size_t)cJSON_GetArraySize(arr) == n);
	size_t i = 0;
	const cJSON *it;
	cJSON_ArrayForEach(it, arr)
		check_string(it, ips[i++]);
	check_string(cJSON_GetObjectItemCaseSensitive(j, "current_pod_ip"),
		     cur);
	check_string(cJSON_GetObjectItemCaseSensitive(j, "ips_timestamp"),
		     ver);
	cJSON_Delete(j);
	free(text);
}

static void load_file(const uint8_t *data, size_t size)
{
	FILE *f = fopen(file, "wb");
	if (!f)
		abort();
	fwrite(data, 1, size, f);
	fclose(f);
	struct hp_resconf *rc = hp_resconf_new(scratch);
	FUZZ_CHECK(rc != NULL);
	char *ips = hp_resconf_ips_json(rc);
	cJSON *j = cJSON_Parse(ips);
	FUZZ_CHECK(cJSON_IsArray(j));
	cJSON_Delete(j);
	free(ips);
	/* What a /start with no rankIps then shows. */
	char *ri = hp_resconf_rank_ips_json(rc);
	FUZZ_CHECK(strcmp(ri, "null") == 0);
	free(ri);
	hp_resconf_free(rc);
	unlink(file);
}

static long num(const char *s)
{
	errno = 0;
	long v = strtol(s, NULL, 10);
	return errno ? LONG_MAX : v;
}

static void merge_script(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1);
	memcpy(buf, data, size);
	buf[size] = '\0';
	char *old[MAX_ENTRIES];
	size_t n_old = 0, n_upd = 0;
	struct hp_rank_ip upd[MAX_ENTRIES];
	long nnodes = 0;
	const char *cur = NULL, *ver = NULL;
	bool bad_rank = false;

	for (char *line = buf, *next; line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		char *arg = line[0] && line[1] == ' ' ? line + 2 : NULL;
		switch (line[0]) {
		case 'N':
			if (arg)
				nnodes = num(arg);
			break;
		case 'o':
			if (n_old < MAX_ENTRIES)
				old[n_old++] = arg;
			break;
		case 'u':
			if (!arg || n_upd == MAX_ENTRIES)
				break;
			char *ip = strchr(arg, ' ');
			if (ip)
				*ip++ = '\0';
			long r = num(arg);
			bad_rank |= r < 0 || r > HP_RESCONF_MAX_RANK;
			upd[n_upd++] = (struct hp_rank_ip){
				.rank = r < INT_MIN ? INT_MIN
					: r > INT_MAX ? INT_MAX : (int)r,
				.ip = ip ? ip : "",
			};
			break;
		case 'c':
			cur = arg;
			break;
		case 'v':
			ver = arg;
			break;
		}
	}
	/* Large tables are legal but slow to fuzz; the bound itself is
	 * checked through the error path. */
	if (nnodes > 4096 && nnodes <= HP_RESCONF_MAX_RANK + 1)
		nnodes = 4096;
	int nn = nnodes < INT_MIN ? INT_MIN
		 : nnodes > INT_MAX ? INT_MAX : (int)nnodes;
	bool bad = bad_rank || nn < 0 || nn > HP_RESCONF_MAX_RANK + 1;

	char **out = (char **)1;
	size_t n_out = 12345;
	int r = hp_resconf_merge(old, n_old, nn, upd, n_upd, &out, &n_out);
	if (bad) {
		FUZZ_CHECK(r == -EINVAL);
		FUZZ_CHECK(out == (char **)1 && n_out == 12345);
		free(buf);
		return;
	}
	FUZZ_CHECK(r == 0);
	if (n_upd == 0) {
		FUZZ_CHECK(n_out == (n_old ? n_old : (size_t)nn));
	} else {
		FUZZ_CHECK(n_out == (size_t)nn);
	}
	for (size_t i = 0; i < n_out; i++) {
		/* the last update for rank i wins, else the old entry */
		const char *want = i < n_old ? old[i] : NULL;
		for (size_t k = 0; k < n_upd; k++)
			if ((size_t)upd[k].rank == i)
				want = upd[k].ip;
		if (!want)
			FUZZ_CHECK(out[i] == NULL);
		else
			FUZZ_CHECK(out[i] && strcmp(out[i], want) == 0);
	}
	check_render(out, n_out, cur, ver);
	hp_resconf_ips_free(out, n_out);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 0 && (data[0] == '{' || data[0] == '['))
		load_file(data, size);
	else
		merge_script(data, size);
	return 0;
}
