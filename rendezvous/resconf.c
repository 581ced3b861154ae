/* resconf.c — pod_resourceconfig.json: the merged rank→IP table, written
 * to <file>.tmp and renamed so that a reader never sees half a file.
 * The file text is produced here, byte for byte as the reference's Python
 * json.dump writes it; cJSON is used only to read a file left by an earlier
 * agent (DESIGN.md: cJSON lives in server/json.c and this writer).
 * It must never read the environment or block on anything but the file. */
#include "resconf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "base/log.h"
#include "base/sbuf.h"
#include "base/xalloc.h"
#include "base/rankip.h"

#define COMP "resconf"
/* A table of HP_RESCONF_MAX_RANK + 1 IPv6 addresses is under 5 MiB. */
#define MAX_FILE_SIZE (16u << 20)

struct hp_resconf {
	char *dir;
	char *path;
	char *tmp_path;
	char **ips; /* NULL entries are null */
	size_t n_ips;
	char *ip_version;
	/* the last request's rankIps, for the workers */
	bool has_rank_ips;
	struct hp_rank_ip *rank_ips;
	size_t n_rank_ips;
};

/* ---- a growing string ---------------------------------------------------- */

static void sb_u16(struct hp_sbuf *sb, unsigned v)
{
	char tmp[8];
	snprintf(tmp, sizeof(tmp), "\\u%04x", v & 0xffffu);
	hp_sbuf_puts(sb, tmp);
}

/* Decodes one UTF-8 sequence at s (n bytes left); returns its length and
 * the code point, or 1 and U+FFFD for a malformed byte. */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
	unsigned char b = s[0];
	size_t len;
	uint32_t min;
	if (b < 0x80) {
		*cp = b;
		return 1;
	} else if (b >= 0xc2 && b <= 0xdf) {
		len = 2, min = 0x80, *cp = b & 0x1f;
	} else if (b >= 0xe0 && b <= 0xef) {
		len = 3, min = 0x800, *cp = b & 0x0f;
	} else if (b >= 0xf0 && b <= 0xf4) {
		len = 4, min = 0x10000, *cp = b & 0x07;
	} else {
		goto bad;
	}
	if (n < len)
		goto bad;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			goto bad;
		*cp = (*cp << 6) | (s[i] & 0x3f);
	}
	if (*cp < min || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff))
		goto bad;
	return len;
bad:
	*cp = 0xfffd;
	return 1;
}

/* A JSON string as Python's json.dumps(ensure_ascii=True) writes it:
 * everything outside printable ASCII becomes \uXXXX (lower-case hex). */
static void sb_json_str(struct hp_sbuf *sb, const char *s)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t n = strlen(s);
	hp_sbuf_add(sb, "\"", 1);
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		size_t k = utf8_next(u + i, n - i, &cp);
		i += k;
		switch (cp) {
		case '"':
			hp_sbuf_puts(sb, "\\\"");
			continue;
		case '\\':
			hp_sbuf_puts(sb, "\\\\");
			continue;
		case '\n':
			hp_sbuf_puts(sb, "\\n");
			continue;
		case '\r':
			hp_sbuf_puts(sb, "\\r");
			continue;
		case '\t':
			hp_sbuf_puts(sb, "\\t");
			continue;
		case '\b':
			hp_sbuf_puts(sb, "\\b");
			continue;
		case '\f':
			hp_sbuf_puts(sb, "\\f");
			continue;
		default:
			break;
		}
		if (cp >= 0x20 && cp < 0x7f) {
			char c = (char)cp;
			hp_sbuf_add(sb, &c, 1);
		} else if (cp < 0x10000) {
			sb_u16(sb, cp);
		} else {
			cp -= 0x10000;
			sb_u16(sb, 0xd800 | (cp >> 10));
			sb_u16(sb, 0xdc00 | (cp & 0x3ff));
		}
	}
	hp_sbuf_add(sb, "\"", 1);
}

static void sb_json_str_or_null(struct hp_sbuf *sb, const char *s)
{
	if (s)
		sb_json_str(sb, s);
	else
		hp_sbuf_puts(sb, "null");
}

/* ---- pure parts -------------------------------------------------------- */

void hp_resconf_ips_free(char **ips, size_t n)
{
	if (!ips)
		return;
	for (size_t i = 0; i < n; i++)
		free(ips[i]);
	free(ips);
}

int hp_resconf_merge(char *const *old, size_t n_old, int nnodes,
		     const struct hp_rank_ip *upd, size_t n_upd, char ***out,
		     size_t *n_out)
{
	if (nnodes < 0 || nnodes > HP_RESCONF_MAX_RANK + 1)
		return -EINVAL;
	for (size_t i = 0; i < n_upd; i++)
		if (upd[i].rank < 0 || upd[i].rank > HP_RESCONF_MAX_RANK)
			return -EINVAL;

	size_t n;
	if (n_upd == 0)
		n = n_old ? n_old : (size_t)nnodes;
	else
		n = (size_t)nnodes;
	char **ips = xcalloc(n ? n : 1, sizeof(*ips));
	for (size_t i = 0; i < n && i < n_old; i++)
		ips[i] = xstrdup_or_null(old[i]);
	for (size_t i = 0; i < n_upd; i++) {
		size_t r = (size_t)upd[i].rank;
		if (r >= n)
			continue;
		free(ips[r]);
		ips[r] = xstrdup_or_null(upd[i].ip);
	}
	*out = ips;
	*n_out = n;
	return 0;
}

char *hp_resconf_render(char *const *ips, size_t n, const char *current_ip,
			const char *ip_version)
{
	struct hp_sbuf sb = {0};
	hp_sbuf_puts(&sb, "{\"ips\": [");
	for (size_t i = 0; i < n; i++) {
		if (i)
			hp_sbuf_puts(&sb, ", ");
		sb_json_str_or_null(&sb, ips[i]);
	}
	hp_sbuf_puts(&sb, "], \"current_pod_ip\": ");
	sb_json_str_or_null(&sb, current_ip);
	hp_sbuf_puts(&sb, ", \"ips_timestamp\": ");
	sb_json_str_or_null(&sb, ip_version);
	hp_sbuf_puts(&sb, "}");
	return hp_sbuf_finish(&sb);
}

/* ---- the file ---------------------------------------------------------- */

static int mkdir_p(const char *dir)
{
	char *p = xstrdup(dir);
	int r = 0;
	for (char *s = p + 1;; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		char c = *s;
		*s = '\0';
		if (mkdir(p, 0755) < 0 && errno != EEXIST) {
			r = -errno;
			goto out;
		}
		*s = c;
		if (c == '\0')
			break;
	}
	struct stat st;
	if (stat(dir, &st) < 0)
		r = -errno;
	else if (!S_ISDIR(st.st_mode))
		r = -ENOTDIR;
out:
	free(p);
	return r;
}

static char *read_file(const char *path, size_t *len, int *err)
{
	char *buf = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	*err = 0;
	if (fd < 0) {
		*err = -errno;
		return NULL;
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		*err = -errno;
		goto out;
	}
	if (st.st_size < 0 || (uintmax_t)st.st_size > MAX_FILE_SIZE) {
		*err = -EFBIG;
		goto out;
	}
	buf = xmalloc((size_t)st.st_size + 1);
	size_t have = 0;
	for (;;) {
		ssize_t r = read(fd, buf + have, (size_t)st.st_size - have);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			*err = -errno;
			free(buf);
			buf = NULL;
			goto out;
		}
		if (r == 0 || (have += (size_t)r) == (size_t)st.st_size)
			break;
	}
	buf[have] = '\0';
	*len = have;
out:
	close(fd);
	return buf;
}

/* Takes the table and version a previous agent left in the file. */
static void load_existing(struct hp_resconf *rc)
{
	size_t len = 0;
	int err;
	char *text = read_file(rc->path, &len, &err);
	if (!text) {
		if (err != -ENOENT)
			hp_warn(COMP, "cannot read %s: %s; starting empty",
				rc->path, strerror(-err));
		return;
	}
	cJSON *root = cJSON_ParseWithLength(text, len);
	if (!cJSON_IsObject(root)) {
		hp_warn(COMP, "%s is not a JSON object; starting empty",
			rc->path);
		goto out;
	}
	const cJSON *ips = cJSON_GetObjectItemCaseSensitive(root, "ips");
	if (cJSON_IsArray(ips)) {
		size_t n = (size_t)cJSON_GetArraySize(ips);
		rc->ips = xcalloc(n ? n : 1, sizeof(*rc->ips));
		rc->n_ips = n;
		size_t i = 0;
		const cJSON *it;
		cJSON_ArrayForEach(it, ips)
		{
			if (cJSON_IsString(it))
				rc->ips[i] = xstrdup(it->valuestring);
			else if (!cJSON_IsNull(it))
				hp_warn(COMP, "%s: ips[%zu] is not a string; "
					      "taken as null",
					rc->path, i);
			i++;
		}
	}
	const cJSON *ver =
		cJSON_GetObjectItemCaseSensitive(root, "ips_timestamp");
	if (cJSON_IsString(ver))
		rc->ip_version = xstrdup(ver->valuestring);
	hp_info(COMP, "found %s: %zu ips, ips_timestamp %s", rc->path,
		rc->n_ips, rc->ip_version ? rc->ip_version : "null");
out:
	cJSON_Delete(root);
	free(text);
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* A fresh <file>.tmp.XXXXXX then rename(2): readers see the old file or
 * the new one. mkostemp creates it with O_EXCL, so nothing planted in the
 * directory (a symlink at a predictable temp name) is ever followed or
 * written through; rename replaces a symlink at the final name instead of
 * writing where it points (issue 12 §9). */
static int write_atomic(const struct hp_resconf *rc, const char *text)
{
	char *tmp = xasprintf("%s.XXXXXX", rc->tmp_path);
	int fd = mkostemp(tmp, O_CLOEXEC);
	int r = 0;
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	/* workers of any uid read it, as they did with 0666 & ~umask */
	if (fchmod(fd, 0644) < 0)
		r = -errno;
	if (r == 0)
		r = write_all(fd, text, strlen(text));
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, rc->path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
out:
	free(tmp);
	return r;
}

struct hp_resconf *hp_resconf_new(const char *dir)
{
	if (!dir || !*dir)
		dir = HP_RESCONF_DEFAULT_DIR;
	int r = mkdir_p(dir);
	if (r < 0) {
		hp_error(COMP, "cannot create the resource config directory "
			       "%s: %s",
			 dir, strerror(-r));
		return NULL;
	}
	struct hp_resconf *rc = xcalloc(1, sizeof(*rc));
	rc->dir = xstrdup(dir);
	rc->path = xasprintf("%s/%s", dir, HP_RESCONF_FILE);
	rc->tmp_path = xasprintf("%s.tmp", rc->path);
	load_existing(rc);
	return rc;
}

const char *hp_resconf_path(const struct hp_resconf *rc)
{
	return rc->path;
}

static void forget_rank_ips(struct hp_resconf *rc)
{
	for (size_t i = 0; i < rc->n_rank_ips; i++)
		free(rc->rank_ips[i].ip);
	free(rc->rank_ips);
	rc->rank_ips = NULL;
	rc->n_rank_ips = 0;
	rc->has_rank_ips = false;
}

static void remember_rank_ips(struct hp_resconf *rc,
			      const struct hp_rank_ip *ips, size_t n,
			      bool has_ips)
{
	forget_rank_ips(rc);
	rc->has_rank_ips = has_ips;
	if (!has_ips || n == 0)
		return;
	rc->rank_ips = xcalloc(n, sizeof(*rc->rank_ips));
	for (size_t i = 0; i < n; i++) {
		rc->rank_ips[i].rank = ips[i].rank;
		rc->rank_ips[i].ip = xstrdup(ips[i].ip ? ips[i].ip : "");
	}
	rc->n_rank_ips = n;
}

int hp_resconf_apply(struct hp_resconf *rc, int rank, int nnodes,
		     const struct hp_rank_ip *ips, size_t n, bool has_ips,
		     const char *ip_version)
{
	/* The reference hands the workers the request's list whether or not
	 * the file is written. */
	remember_rank_ips(rc, ips, n, has_ips);
	if (!has_ips || !ip_version) {
		hp_debug(COMP, "no %s in the request; %s left as it is",
			 has_ips ? "ipVersion" : "rankIps", rc->path);
		return 0;
	}

	char **table = NULL;
	size_t n_table = 0;
	int r = hp_resconf_merge(rc->ips, rc->n_ips, nnodes, ips, n, &table,
				 &n_table);
	if (r < 0) {
		hp_error(COMP, "refusing rankIps for nnodes %d: a rank is "
			       "outside [0, %d]; %s not updated",
			 nnodes, HP_RESCONF_MAX_RANK, rc->path);
		return r;
	}
	const char *current = NULL;
	if (rank >= 0 && rank < nnodes && (size_t)rank < n_table)
		current = table[rank];
	char *text = hp_resconf_render(table, n_table, current, ip_version);
	r = write_atomic(rc, text);
	free(text);
	if (r < 0) {
		hp_error(COMP, "cannot write %s: %s", rc->path, strerror(-r));
		hp_resconf_ips_free(table, n_table);
		return r;
	}
	hp_resconf_ips_free(rc->ips, rc->n_ips);
	rc->ips = table;
	rc->n_ips = n_table;
	free(rc->ip_version);
	rc->ip_version = xstrdup(ip_version);
	hp_info(COMP, "wrote %s: %zu ips, %zu updated, ips_timestamp %s",
		rc->path, n_table, n, ip_version);
	return 0;
}

const char *hp_resconf_ip_version(const struct hp_resconf *rc)
{
	return rc->ip_version;
}

void hp_resconf_reset_ip_version(struct hp_resconf *rc)
{
	free(rc->ip_version);
	rc->ip_version = NULL;
}

char *hp_resconf_ips_json(const struct hp_resconf *rc)
{
	struct hp_sbuf sb = {0};
	hp_sbuf_puts(&sb, "[");
	for (size_t i = 0; i < rc->n_ips; i++) {
		if (i)
			hp_sbuf_puts(&sb, ",");
		sb_json_str_or_null(&sb, rc->ips[i]);
	}
	hp_sbuf_puts(&sb, "]");
	return hp_sbuf_finish(&sb);
}

char *hp_resconf_rank_ips_json(const struct hp_resconf *rc)
{
	if (!rc->has_rank_ips)
		return xstrdup("null");
	struct hp_sbuf sb = {0};
	hp_sbuf_puts(&sb, "[");
	for (size_t i = 0; i < rc->n_rank_ips; i++) {
		char num[32];
		snprintf(num, sizeof(num), "%s{\"rank\":%d,\"ip\":",
			 i ? "," : "", rc->rank_ips[i].rank);
		hp_sbuf_puts(&sb, num);
		sb_json_str(&sb, rc->rank_ips[i].ip);
		hp_sbuf_puts(&sb, "}");
	}
	hp_sbuf_puts(&sb, "]");
	return hp_sbuf_finish(&sb);
}

void hp_resconf_free(struct hp_resconf *rc)
{
	if (!rc)
		return;
	hp_resconf_ips_free(rc->ips, rc->n_ips);
	forget_rank_ips(rc);
	free(rc->ip_version);
	free(rc->tmp_path);
	free(rc->path);
	free(rc->dir);
	free(rc);
}
