/* test-resconf.c — pod_resourceconfig.json: the pure merge and file text,
 * then the real file in a temporary directory, byte for byte against what
 * the reference's json.dump writes (expected strings produced by Python). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/log.h"
#include "base/xalloc.h"
#include "rendezvous/resconf.h"
#include "server/server.h"

#define RIP(r, s) ((struct hp_rank_ip){.rank = (r), .ip = (char *)(s)})

static void assert_table(char **ips, size_t n, const char *const *want,
			 size_t n_want)
{
	assert_int_equal(n, n_want);
	for (size_t i = 0; i < n; i++) {
		if (!want[i])
			assert_null(ips[i]);
		else
			assert_string_equal(ips[i], want[i]);
	}
}

/* ---- merge ---------------------------------------------------------------- */

static void merge_first_update_carries_all(void **state)
{
	struct hp_rank_ip upd[] = {RIP(1, "10.0.0.2"), RIP(0, "10.0.0.1"),
				   RIP(2, "10.0.0.3")};
	char **out = NULL;
	size_t n = 0;
	assert_int_equal(hp_resconf_merge(NULL, 0, 3, upd, 3, &out, &n), 0);
	const char *want[] = {"10.0.0.1", "10.0.0.2", "10.0.0.3"};
	assert_table(out, n, want, 3);
	hp_resconf_ips_free(out, n);
}

static void merge_incremental_rerank(void **state)
{
	char *old[] = {"a", "b", "c"};
	struct hp_rank_ip upd[] = {RIP(0, "x"), RIP(2, "a")};
	char **out = NULL;
	size_t n = 0;
	assert_int_equal(hp_resconf_merge(old, 3, 3, upd, 2, &out, &n), 0);
	const char *want[] = {"x", "b", "a"};
	assert_table(out, n, want, 3);
	/* the old table is not touched */
	assert_string_equal(old[0], "a");
	hp_resconf_ips_free(out, n);
}

static void merge_later_entry_wins(void **state)
{
	struct hp_rank_ip upd[] = {RIP(0, "x"), RIP(0, "y")};
	char **out = NULL;
	size_t n = 0;
	assert_int_equal(hp_resconf_merge(NULL, 0, 1, upd, 2, &out, &n), 0);
	const char *want[] = {"y"};
	assert_table(out, n, want, 1);
	hp_resconf_ips_free(out, n);
}

static void merge_resize_up_pads_null(void **state)
{
	char *old[] = {"a", "b"};
	struct hp_rank_ip upd[] = {RIP(3, "d")};
	char **out = NULL;
	size_t n = 0;
	assert_int_equal(hp_resconf_merge(old, 2, 4, upd, 1, &out, &n), 0);
	const char *want[] = {"a", "b", NULL, "d"};
	assert_table(out, n, want, 4);
	hp_resconf_ips_free(out, n);
}

static void merge_resize_down_cuts(void **state)
{
	char *old[] = {"a", "b", "c", "d"};
	/* rank 3 is beyond nnodes: ignored, not an error */
	struct hp_rank_ip upd[] = {RIP(1, "x"), RIP(3, "y")};
	char **out = NULL;
	size_t n = 0;
	assert_int_equal(hp_resconf_merge(old, 4, 2, upd, 2, &out, &n), 0);
	const char *want[] = {"a", "x"};
	assert_table(out, n, want, 2);
	hp_resconf_ips_free(out, n);
}

static void merge_no_entries_keeps_list(void **state)
{
	char *old[] = {"a", NULL, "c"};
	char **out = NULL;
	size_t n = 0;
	/* kept as it is, even though nnodes differs (the reference) */
	assert_int_equal(hp_resconf_merge(old, 3, 5, NULL, 0, &out, &n), 0);
	const char *want[] = {"a", NULL, "c"};
	assert_table(out, n, want, 3);
	hp_resconf_ips_free(out, n);

	assert_int_equal(hp_resconf_merge(NULL, 0, 2, NULL, 0, &out, &n), 0);
	const char *want2[] = {NULL, NULL};
	assert_table(out, n, want2, 2);
	hp_resconf_ips_free(out, n);
}

static void merge_rejects_bad_ranks(void **state)
{
	char **out = (char **)(uintptr_t)0x1;
	size_t n = 77;
	struct hp_rank_ip big[] = {RIP(0, "a"), RIP(100001, "b")};
	assert_int_equal(hp_resconf_merge(NULL, 0, 2, big, 2, &out, &n),
			 -EINVAL);
	struct hp_rank_ip neg[] = {RIP(-1, "a")};
	assert_int_equal(hp_resconf_merge(NULL, 0, 2, neg, 1, &out, &n),
			 -EINVAL);
	assert_int_equal(hp_resconf_merge(NULL, 0, -1, NULL, 0, &out, &n),
			 -EINVAL);
	assert_int_equal(
		hp_resconf_merge(NULL, 0, HP_RESCONF_MAX_RANK + 2, NULL, 0,
				 &out, &n),
		-EINVAL);
	/* untouched on error */
	assert_ptr_equal(out, (char **)(uintptr_t)0x1);
	assert_int_equal(n, 77);

	/* the largest accepted rank, beyond nnodes: ignored */
	struct hp_rank_ip edge[] = {RIP(100000, "z")};
	char **ok = NULL;
	assert_int_equal(hp_resconf_merge(NULL, 0, 2, edge, 1, &ok, &n), 0);
	const char *want[] = {NULL, NULL};
	assert_table(ok, n, want, 2);
	hp_resconf_ips_free(ok, n);
}

/* ---- file text ------------------------------------------------------------ */

static void render_matches_python_json_dump(void **state)
{
	char *ips[] = {"10.0.0.1", NULL, "fe80::1"};
	char *s = hp_resconf_render(ips, 3, NULL,
				    "v\xc3\xa9\"\\\n\x01\x7f\xf0\x9f\x98\x80/\t");
	assert_string_equal(
		s, "{\"ips\": [\"10.0.0.1\", null, \"fe80::1\"], "
		   "\"current_pod_ip\": null, \"ips_timestamp\": "
		   "\"v\\u00e9\\\"\\\\\\n\\u0001\\u007f\\ud83d\\ude00/\\t\"}");
	free(s);

	s = hp_resconf_render(NULL, 0, NULL, NULL);
	assert_string_equal(s, "{\"ips\": [], \"current_pod_ip\": null, "
			       "\"ips_timestamp\": null}");
	free(s);

	/* a malformed byte becomes U+FFFD rather than invalid JSON */
	char *bad[] = {"a\xff"};
	s = hp_resconf_render(bad, 1, "a\xff", "1");
	assert_string_equal(s, "{\"ips\": [\"a\\ufffd\"], \"current_pod_ip\": "
			       "\"a\\ufffd\", \"ips_timestamp\": \"1\"}");
	free(s);
}

/* ---- the file ------------------------------------------------------------- */

struct fx {
	char root[64];
	char *dir;
	char *file;
	char *tmp;
};

static int fx_setup(void **state)
{
	struct fx *f = xcalloc(1, sizeof(*f));
	strcpy(f->root, "/tmp/test-resconf-XXXXXX");
	if (!mkdtemp(f->root))
		return -1;
	/* two levels that do not exist yet: mkdir -p */
	f->dir = xasprintf("%s/opt/config", f->root);
	f->file = xasprintf("%s/pod_resourceconfig.json", f->dir);
	f->tmp = xasprintf("%s.tmp", f->file);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	char *cmd = xasprintf("rm -rf '%s'", f->root);
	int r = system(cmd);
	free(cmd);
	free(f->dir);
	free(f->file);
	free(f->tmp);
	free(f);
	return r == 0 ? 0 : -1;
}

/* Nothing but the file itself in its directory. */
static bool no_temp_left(const struct fx *f)
{
	DIR *d = opendir(f->dir);
	bool ok = d != NULL;
	struct dirent *e;
	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.' &&
		    strcmp(e->d_name, "pod_resourceconfig.json") != 0)
			ok = false;
	if (d)
		closedir(d);
	return ok;
}

static char *slurp(const char *path)
{
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return NULL;
	char *buf = xmalloc(1 << 16);
	size_t n = fread(buf, 1, (1 << 16) - 1, fp);
	buf[n] = '\0';
	fclose(fp);
	return buf;
}

static void assert_file(const char *path, const char *want)
{
	char *got = slurp(path);
	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

static bool exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

static void file_lifecycle(void **state)
{
	struct fx *f = *state;
	struct hp_resconf *rc = hp_resconf_new(f->dir);
	assert_non_null(rc);
	assert_string_equal(hp_resconf_path(rc), f->file);
	assert_null(hp_resconf_ip_version(rc));
	assert_false(exists(f->file));

	/* first update: every rank */
	struct hp_rank_ip all[] = {RIP(0, "10.0.0.1"), RIP(1, "10.0.0.2"),
				   RIP(2, "10.0.0.3")};
	assert_int_equal(hp_resconf_apply(rc, 1, 3, all, 3, true, "v1"), 0);
	assert_file(f->file,
		    "{\"ips\": [\"10.0.0.1\", \"10.0.0.2\", \"10.0.0.3\"], "
		    "\"current_pod_ip\": \"10.0.0.2\", \"ips_timestamp\": "
		    "\"v1\"}");
	assert_false(exists(f->tmp));
	assert_string_equal(hp_resconf_ip_version(rc), "v1");
	char *j = hp_resconf_ips_json(rc);
	assert_string_equal(j, "[\"10.0.0.1\",\"10.0.0.2\",\"10.0.0.3\"]");
	free(j);
	j = hp_resconf_rank_ips_json(rc);
	assert_string_equal(j, "[{\"rank\":0,\"ip\":\"10.0.0.1\"},"
			       "{\"rank\":1,\"ip\":\"10.0.0.2\"},"
			       "{\"rank\":2,\"ip\":\"10.0.0.3\"}]");
	free(j);

	/* re-rank: this node becomes rank 0, the cluster grows to 4 */
	struct hp_rank_ip rer[] = {RIP(0, "10.0.0.2"), RIP(1, "10.0.0.1"),
				   RIP(3, "10.0.0.9")};
	assert_int_equal(hp_resconf_apply(rc, 0, 4, rer, 3, true, "v2"), 0);
	const char *v2 =
		"{\"ips\": [\"10.0.0.2\", \"10.0.0.1\", \"10.0.0.3\", "
		"\"10.0.0.9\"], \"current_pod_ip\": \"10.0.0.2\", "
		"\"ips_timestamp\": \"v2\"}";
	assert_file(f->file, v2);
	assert_false(exists(f->tmp));
	assert_string_equal(hp_resconf_ip_version(rc), "v2");

	/* no rankIps: nothing written, version kept, workers get null */
	assert_int_equal(hp_resconf_apply(rc, 0, 4, NULL, 0, false, "v3"), 0);
	assert_file(f->file, v2);
	assert_string_equal(hp_resconf_ip_version(rc), "v2");
	j = hp_resconf_rank_ips_json(rc);
	assert_string_equal(j, "null");
	free(j);

	/* rankIps without ipVersion: nothing written either */
	struct hp_rank_ip one[] = {RIP(0, "10.9.9.9")};
	assert_int_equal(hp_resconf_apply(rc, 0, 4, one, 1, true, NULL), 0);
	assert_file(f->file, v2);
	assert_string_equal(hp_resconf_ip_version(rc), "v2");
	j = hp_resconf_rank_ips_json(rc);
	assert_string_equal(j, "[{\"rank\":0,\"ip\":\"10.9.9.9\"}]");
	free(j);

	/* an empty rankIps with a version: list kept, version written */
	assert_int_equal(hp_resconf_apply(rc, 1, 4, NULL, 0, true, "v4"), 0);
	assert_file(f->file,
		    "{\"ips\": [\"10.0.0.2\", \"10.0.0.1\", \"10.0.0.3\", "
		    "\"10.0.0.9\"], \"current_pod_ip\": \"10.0.0.1\", "
		    "\"ips_timestamp\": \"v4\"}");
	j = hp_resconf_rank_ips_json(rc);
	assert_string_equal(j, "[]");
	free(j);

	/* rank > 100000: refused, nothing written */
	struct hp_rank_ip huge[] = {RIP(0, "1.1.1.1"), RIP(100001, "2.2.2.2")};
	assert_int_equal(hp_resconf_apply(rc, 0, 4, huge, 2, true, "v5"),
			 -EINVAL);
	assert_string_equal(hp_resconf_ip_version(rc), "v4");
	assert_false(exists(f->tmp));

	/* shrink to 2 nodes; this node's rank is now outside: null */
	struct hp_rank_ip sh[] = {RIP(1, "10.0.0.7")};
	assert_int_equal(hp_resconf_apply(rc, 2, 2, sh, 1, true, "v6"), 0);
	const char *v6 = "{\"ips\": [\"10.0.0.2\", \"10.0.0.7\"], "
			 "\"current_pod_ip\": null, \"ips_timestamp\": \"v6\"}";
	assert_file(f->file, v6);

	/* IPR stops workers: the version is forgotten, the file is not */
	hp_resconf_reset_ip_version(rc);
	assert_null(hp_resconf_ip_version(rc));
	assert_file(f->file, v6);
	hp_resconf_free(rc);

	/* a new agent finds the table and version the last one wrote */
	rc = hp_resconf_new(f->dir);
	assert_non_null(rc);
	assert_string_equal(hp_resconf_ip_version(rc), "v6");
	j = hp_resconf_ips_json(rc);
	assert_string_equal(j, "[\"10.0.0.2\",\"10.0.0.7\"]");
	free(j);
	struct hp_rank_ip inc[] = {RIP(0, "10.0.0.8")};
	assert_int_equal(hp_resconf_apply(rc, 0, 2, inc, 1, true, "v7"), 0);
	assert_file(f->file, "{\"ips\": [\"10.0.0.8\", \"10.0.0.7\"], "
			     "\"current_pod_ip\": \"10.0.0.8\", "
			     "\"ips_timestamp\": \"v7\"}");
	hp_resconf_free(rc);
}

static void file_garbage_is_ignored(void **state)
{
	struct fx *f = *state;
	char *cmd = xasprintf("mkdir -p '%s' && printf '{\"ips\": [1, "
			      "\"a\"], \"ips_timestamp\": 5}' > '%s'",
			      f->dir, f->file);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	struct hp_resconf *rc = hp_resconf_new(f->dir);
	assert_non_null(rc);
	assert_null(hp_resconf_ip_version(rc));
	char *j = hp_resconf_ips_json(rc);
	assert_string_equal(j, "[null,\"a\"]");
	free(j);
	hp_resconf_free(rc);

	cmd = xasprintf("printf 'not json' > '%s'", f->file);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	rc = hp_resconf_new(f->dir);
	assert_non_null(rc);
	j = hp_resconf_ips_json(rc);
	assert_string_equal(j, "[]");
	free(j);
	hp_resconf_free(rc);
}

static void file_write_error_keeps_state(void **state)
{
	struct fx *f = *state;
	struct hp_resconf *rc = hp_resconf_new(f->dir);
	assert_non_null(rc);
	struct hp_rank_ip a[] = {RIP(0, "10.0.0.1")};
	assert_int_equal(hp_resconf_apply(rc, 0, 1, a, 1, true, "v1"), 0);
	/* a directory at the file's name: rename(2) fails even for root */
	char *aside = xasprintf("%s.aside", f->file);
	assert_int_equal(rename(f->file, aside), 0);
	assert_int_equal(mkdir(f->file, 0755), 0);
	struct hp_rank_ip b[] = {RIP(0, "10.0.0.2")};
	assert_int_equal(hp_resconf_apply(rc, 0, 1, b, 1, true, "v2"),
			 -EISDIR);
	assert_int_equal(rmdir(f->file), 0);
	assert_int_equal(rename(aside, f->file), 0);
	free(aside);
	assert_string_equal(hp_resconf_ip_version(rc), "v1");
	char *j = hp_resconf_ips_json(rc);
	assert_string_equal(j, "[\"10.0.0.1\"]");
	free(j);
	assert_file(f->file, "{\"ips\": [\"10.0.0.1\"], \"current_pod_ip\": "
			     "\"10.0.0.1\", \"ips_timestamp\": \"v1\"}");
	assert_true(no_temp_left(f));
	hp_resconf_free(rc);
}

/* Issue 12 §9: a symlink planted at the old fixed temp name is never
 * written through. */
static void planted_symlink_not_followed(void **state)
{
	struct fx *f = *state;
	struct hp_resconf *rc = hp_resconf_new(f->dir);
	assert_non_null(rc);
	char *victim = xasprintf("%s/victim", f->root);
	int fd = open(victim, O_CREAT | O_WRONLY, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "keep", 4), 4);
	close(fd);
	assert_int_equal(symlink(victim, f->tmp), 0);
	struct hp_rank_ip a[] = {RIP(0, "10.0.0.1")};
	assert_int_equal(hp_resconf_apply(rc, 0, 1, a, 1, true, "v1"), 0);
	assert_file(victim, "keep");
	assert_file(f->file, "{\"ips\": [\"10.0.0.1\"], \"current_pod_ip\": "
			     "\"10.0.0.1\", \"ips_timestamp\": \"v1\"}");
	struct stat st;
	assert_int_equal(lstat(f->tmp, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	assert_int_equal(stat(f->file, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	assert_int_equal(unlink(f->tmp), 0);
	assert_true(no_temp_left(f));
	free(victim);
	hp_resconf_free(rc);
}

static void new_fails_when_dir_cannot_exist(void **state)
{
	struct fx *f = *state;
	char *file = xasprintf("%s/plain", f->root);
	int fd = open(file, O_CREAT | O_WRONLY, 0644);
	assert_true(fd >= 0);
	close(fd);
	char *dir = xasprintf("%s/sub", file);
	assert_null(hp_resconf_new(dir));
	assert_null(hp_resconf_new(file));
	free(dir);
	free(file);
	hp_resconf_free(NULL);
}

int main(void)
{
	hp_log_level = HP_LOG_WARN;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(merge_first_update_carries_all),
		cmocka_unit_test(merge_incremental_rerank),
		cmocka_unit_test(merge_later_entry_wins),
		cmocka_unit_test(merge_resize_up_pads_null),
		cmocka_unit_test(merge_resize_down_cuts),
		cmocka_unit_test(merge_no_entries_keeps_list),
		cmocka_unit_test(merge_rejects_bad_ranks),
		cmocka_unit_test(render_matches_python_json_dump),
		cmocka_unit_test_setup_teardown(file_lifecycle, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(file_garbage_is_ignored,
						fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(planted_symlink_not_followed,
						fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(file_write_error_keeps_state,
						fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(new_fails_when_dir_cannot_exist,
						fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
