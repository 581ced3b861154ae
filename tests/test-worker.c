/* test-worker.c — hp_worker_spawn_begin/end against real children: what a
 * child finds at its exec (argv, env, stdout/stderr, log files, process
 * group, signal mask and ignores), glibc execvpe's semantics (PATH search,
 * EACCES, ENOENT, a script without "#!" run by /bin/sh), the failed step
 * and its reaping, and a group of 64 started at once. Run twice by meson:
 * once on the clone(CLONE_VM) path, once with HYPERPODRUN_SPAWN=fork. The
 * clone child reads copies: every case frees or overwrites its argv, envp
 * and paths as soon as begin returns. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <cmocka.h>

#include "agent/worker.h"

static char tmpdir[64];

static char **strv(const char *first, ...)
{
	char **v = calloc(32, sizeof(char *));
	va_list ap;
	va_start(ap, first);
	int n = 0;
	for (const char *s = first; s; s = va_arg(ap, const char *))
		v[n++] = strdup(s);
	va_end(ap);
	return v;
}

/* frees v after scribbling over it, so a child still reading it fails */
static void burn(char **v)
{
	for (int i = 0; v[i]; i++) {
		memset(v[i], 'X', strlen(v[i]));
		free(v[i]);
		v[i] = (char *)"garbage";
	}
	free(v);
}

static int wait_exit(pid_t pid)
{
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Everything the child wrote to fd until EOF. */
static char *slurp(int fd)
{
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	ssize_t n;
	while ((n = read(fd, buf + len, cap - len - 1)) > 0)
		len += (size_t)n;
	buf[len] = '\0';
	return buf;
}

static char *read_file(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	char *s = slurp(fd);
	close(fd);
	return s;
}

/* Writes body to path (made or truncated, with mode). */
static void make_file(const char *path, mode_t mode, const char *body)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	assert_true(fd >= 0);
	size_t n = strlen(body);
	assert_int_equal(write(fd, body, n), (ssize_t)n);
	close(fd);
}

/* Runs argv with envp (both burnt after begin), its stdout on a pipe;
 * returns what it printed, *code its exit status. */
static char *run(char **argv, char **envp, int *code)
{
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	struct hp_spawn sp = {.argv = argv, .envp = envp, .stdout_fd = p[1],
			      .stderr_fd = -1};
	struct hp_spawn_child c;
	assert_int_equal(hp_worker_spawn_begin(&sp, &c), 0);
	burn(argv);
	burn(envp);
	close(p[1]);
	enum hp_spawn_step step = HP_SPAWN_DUP;
	assert_int_equal(hp_worker_spawn_end(&c, &step), 0);
	char *out = slurp(p[0]);
	close(p[0]);
	*code = wait_exit(c.pid);
	return out;
}

/* The child opens a FIFO as its stdout log and so waits, before exec, for
 * us to open its other end: argv, envp and the FIFO's path are burnt
 * while it certainly has not exec'd yet. */
static void test_copies_survive_the_callers_free(void **state)
{
	(void)state;
	char fifo[128];
	snprintf(fifo, sizeof(fifo), "%s/fifo", tmpdir);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	char *f0 = strdup(fifo);
	struct hp_spawn_fs fs = {.files = {f0, NULL}, .dup = {true, false}};
	char **argv = strv("/bin/sh", "-c",
			   "printf '%s|%s|%s' \"$0\" \"$1\" \"$FOO\"; exit 7",
			   "zero", "one two", NULL);
	char **envp = strv("FOO=bar=baz", "PATH=/nonexistent", NULL);
	struct hp_spawn sp = {.argv = argv, .envp = envp, .stdout_fd = -1,
			      .stderr_fd = -1, .fs = &fs};
	struct hp_spawn_child c;
	assert_int_equal(hp_worker_spawn_begin(&sp, &c), 0);
	burn(argv);
	burn(envp);
	memset(f0, 'X', strlen(f0));
	free(f0);
	int fd = open(fifo, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(hp_worker_spawn_end(&c, NULL), 0);
	char *out = slurp(fd);
	close(fd);
	assert_string_equal(out, "zero|one two|bar=baz");
	assert_int_equal(wait_exit(c.pid), 7);
	free(out);
	unlink(fifo);
}

static void test_path_search(void **state)
{
	(void)state;
	/* a bare name is looked up in the agent's PATH (glibc's execvpe),
	 * not in the child's envp */
	int code;
	char *out = run(strv("sh", "-c", "echo found", NULL),
			strv("PATH=/nonexistent", NULL), &code);
	assert_string_equal(out, "found\n");
	assert_int_equal(code, 0);
	free(out);
}

static void expect_exec_error(const char *prog, int err)
{
	char **argv = strv(prog, NULL);
	char **envp = strv("A=1", NULL);
	struct hp_spawn sp = {.argv = argv, .envp = envp, .stdout_fd = -1,
			      .stderr_fd = -1};
	struct hp_spawn_child c;
	assert_int_equal(hp_worker_spawn_begin(&sp, &c), 0);
	burn(argv);
	burn(envp);
	enum hp_spawn_step step = HP_SPAWN_DUP;
	assert_int_equal(hp_worker_spawn_end(&c, &step), -err);
	assert_int_equal(step, HP_SPAWN_EXEC);
	/* reaped by end: nothing is left to wait for */
	errno = 0;
	assert_int_equal(waitpid(c.pid, NULL, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
}

static void test_missing_program(void **state)
{
	(void)state;
	expect_exec_error("hp-test-no-such-program-anywhere", ENOENT);
	char path[128];
	snprintf(path, sizeof(path), "%s/missing", tmpdir);
	expect_exec_error(path, ENOENT);
}

static void test_not_executable(void **state)
{
	(void)state;
	char path[128];
	snprintf(path, sizeof(path), "%s/plain", tmpdir);
	make_file(path, 0644, "");
	expect_exec_error(path, EACCES);
}

static void test_script_without_shebang(void **state)
{
	(void)state;
	char path[128];
	snprintf(path, sizeof(path), "%s/noshebang", tmpdir);
	make_file(path, 0755, "echo \"script $1\"\n");
	int code;
	char *out = run(strv(path, "arg", NULL), strv("X=1", NULL), &code);
	assert_string_equal(out, "script arg\n");
	assert_int_equal(code, 0);
	free(out);
}

/* The log layout: both directories made, both files created and put on
 * 1 and 2, a stale error file removed when the rank directory existed. */
static void test_log_files(void **state)
{
	(void)state;
	char d0[128], d1[160], f0[200], f1[200], stale[200];
	snprintf(d0, sizeof(d0), "%s/attempt_0", tmpdir);
	snprintf(d1, sizeof(d1), "%s/0", d0);
	snprintf(f0, sizeof(f0), "%s/stdout.log", d1);
	snprintf(f1, sizeof(f1), "%s/stderr.log", d1);
	snprintf(stale, sizeof(stale), "%s/error.json", d1);
	for (int round = 0; round < 2; round++) {
		char *dirs0 = strdup(d0), *dirs1 = strdup(d1);
		char *files0 = strdup(f0), *files1 = strdup(f1);
		char *st = strdup(stale);
		struct hp_spawn_fs fs = {.dirs = {dirs0, dirs1}, .stale = st,
					 .files = {files0, files1},
					 .dup = {true, true}};
		char **argv = strv("/bin/sh", "-c",
				   "echo out$0; echo err$0 >&2", "X", NULL);
		char **envp = strv("A=1", NULL);
		struct hp_spawn sp = {.argv = argv, .envp = envp,
				      .stdout_fd = -1, .stderr_fd = -1,
				      .fs = &fs};
		struct hp_spawn_child c;
		assert_int_equal(hp_worker_spawn_begin(&sp, &c), 0);
		burn(argv);
		burn(envp);
		memset(dirs0, 'X', strlen(dirs0));
		memset(files1, 'X', strlen(files1));
		free(dirs0);
		free(dirs1);
		free(files0);
		free(files1);
		free(st);
		assert_int_equal(hp_worker_spawn_end(&c, NULL), 0);
		assert_int_equal(wait_exit(c.pid), 0);
		char *o = read_file(f0), *e = read_file(f1);
		assert_non_null(o);
		assert_non_null(e);
		assert_string_equal(o, "outX\n");
		assert_string_equal(e, "errX\n");
		free(o);
		free(e);
		struct stat sb;
		if (round == 1) { /* the directory existed: stale removed */
			assert_int_equal(stat(stale, &sb), -1);
			break;
		}
		make_file(stale, 0644, "");
		assert_int_equal(stat(stale, &sb), 0);
	}
}

static void test_unmakeable_dir(void **state)
{
	(void)state;
	char file[128], d0[160], d1[200];
	snprintf(file, sizeof(file), "%s/afile", tmpdir);
	make_file(file, 0644, "");
	snprintf(d0, sizeof(d0), "%s/sub", file);
	snprintf(d1, sizeof(d1), "%s/0", d0);
	struct hp_spawn_fs fs = {.dirs = {d0, d1}};
	char **argv = strv("/bin/true", NULL), **envp = strv("A=1", NULL);
	struct hp_spawn sp = {.argv = argv, .envp = envp, .stdout_fd = -1,
			      .stderr_fd = -1, .fs = &fs};
	struct hp_spawn_child c;
	assert_int_equal(hp_worker_spawn_begin(&sp, &c), 0);
	burn(argv);
	burn(envp);
	enum hp_spawn_step step = HP_SPAWN_EXEC;
	assert_int_equal(hp_worker_spawn_end(&c, &step), -ENOTDIR);
	assert_int_equal(step, HP_SPAWN_DIR0);
	assert_string_equal(hp_spawn_step_path(&fs, step), d0);
}

/* What argv prints on a pipe (argv/envp burnt after begin). */
static char *output_of(char **argv, char **envp, bool keep_pgrp,
		       const sigset_t *reset, pid_t *pid)
{
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	struct hp_spawn sp = {.argv = argv, .envp = envp, .stdout_fd = p[1],
			      .stderr_fd = -1, .keep_pgrp = keep_pgrp,
			      .reset = reset};
	struct hp_spawn_child c;
	assert_int_equal(hp_worker_spawn_begin(&sp, &c), 0);
	burn(argv);
	burn(envp);
	close(p[1]);
	assert_int_equal(hp_worker_spawn_end(&c, NULL), 0);
	char *out = slurp(p[0]);
	close(p[0]);
	assert_int_equal(wait_exit(c.pid), 0);
	*pid = c.pid;
	return out;
}

/* Own process group (or the agent's with keep_pgrp); no signal blocked
 * or ignored at exec, though the agent ignores SIGPIPE and SIGUSR2 and
 * blocks SIGUSR1. grep reads its own status: a shell would clear its mask
 * itself. */
static void test_group_and_signals(void **state)
{
	(void)state;
	signal(SIGPIPE, SIG_IGN);
	signal(SIGUSR2, SIG_IGN);
	sigset_t usr1, old;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, &old);
	sigset_t reset;
	hp_worker_signals_set(&reset);
	assert_int_equal(sigismember(&reset, SIGPIPE), 1);
	pid_t pid;
	char *out = output_of(strv("grep", "-E", "^Sig(Blk|Ign)",
				   "/proc/self/status", NULL),
			      strv("A=1", NULL), false, &reset, &pid);
	assert_string_equal(out, "SigBlk:\t0000000000000000\n"
				 "SigIgn:\t0000000000000000\n");
	free(out);
	for (int keep = 0; keep < 2; keep++) {
		out = output_of(strv("/bin/sh", "-c",
				     "cut -d' ' -f5 /proc/$$/stat", NULL),
				strv("PATH=/usr/bin:/bin", NULL), keep, &reset,
				&pid);
		char want[32];
		snprintf(want, sizeof(want), "%d\n",
			 keep ? (int)getpgrp() : (int)pid);
		assert_string_equal(out, want);
		free(out);
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	signal(SIGPIPE, SIG_DFL);
	signal(SIGUSR2, SIG_DFL);
}

/* 64 begun before the first end, each with its own rank in env and
 * argv; every one exec'd, exits with its rank, and is reaped by us. */
static void test_group_of_64(void **state)
{
	(void)state;
	enum { N = 64 };
	struct hp_spawn_child c[N];
	for (int i = 0; i < N; i++) {
		char r[32], e[32];
		snprintf(r, sizeof(r), "%d", i);
		snprintf(e, sizeof(e), "RANK=%d", i);
		char **argv = strv("/bin/sh", "-c",
				   "[ \"$RANK\" = \"$0\" ] && exit $0; exit 255",
				   r, NULL);
		char **envp = strv(e, NULL);
		struct hp_spawn sp = {.argv = argv, .envp = envp,
				      .stdout_fd = -1, .stderr_fd = -1};
		assert_int_equal(hp_worker_spawn_begin(&sp, &c[i]), 0);
		burn(argv);
		burn(envp);
	}
	for (int i = 0; i < N; i++)
		assert_int_equal(hp_worker_spawn_end(&c[i], NULL), 0);
	for (int i = 0; i < N; i++)
		assert_int_equal(wait_exit(c[i].pid), i);
}

/* Where the kernel or a sandbox refuses clone(CLONE_VM) without
 * CLONE_THREAD (qemu-user does, with EINVAL), workers still start, by
 * fork(), and keep starting. A seccomp filter refuses it here, in a child
 * process of the test, so the filter dies with it. */
static void test_refused_clone_falls_back_to_fork(void **state)
{
	(void)state;
	const char *pre = getenv("LD_PRELOAD");
	if (pre && strstr(pre, "vgpreload"))
		skip(); /* valgrind runs neither the filter nor such a clone */
	pid_t t = fork();
	assert_true(t >= 0);
	if (t == 0) {
		struct sock_filter f[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
				 offsetof(struct seccomp_data, nr)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 3),
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
				 offsetof(struct seccomp_data, args[0])),
			BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_VM, 0, 1),
			BPF_STMT(BPF_RET | BPF_K,
				 SECCOMP_RET_ERRNO | (EINVAL & SECCOMP_RET_DATA)),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		struct sock_fprog prog = {.len = HP_ARRAY_LEN(f), .filter = f};
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
		    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
			_exit(10);
		/* the filter works: a CLONE_VM clone is refused */
		if (syscall(SYS_clone, CLONE_VM | SIGCHLD, 0, 0, 0, 0) != -1 ||
		    errno != EINVAL)
			_exit(11);
		for (int i = 0; i < 3; i++) {
			char **argv = strv("/bin/sh", "-c", "exit 5", NULL);
			char **envp = strv("A=1", NULL);
			struct hp_spawn sp = {.argv = argv, .envp = envp,
					      .stdout_fd = -1,
					      .stderr_fd = -1};
			struct hp_spawn_child c;
			if (hp_worker_spawn_begin(&sp, &c) != 0)
				_exit(12);
			burn(argv);
			burn(envp);
			if (hp_worker_spawn_end(&c, NULL) != 0)
				_exit(13);
			int st;
			if (waitpid(c.pid, &st, 0) != c.pid || !WIFEXITED(st) ||
			    WEXITSTATUS(st) != 5)
				_exit(14);
		}
		_exit(0);
	}
	assert_int_equal(wait_exit(t), 0);
}

/* The agent started with 0, 1 and 2 closed: its status pipe must not land
 * on them, or the child's dup of its log onto 1 closes the write end
 * before exec, and the parent takes that EOF for "exec'd" (on the clone
 * path, and unmaps the stack the child still runs on). A missing program
 * is still reported, and a real one still writes its log. In a child
 * process of the test, which closes its own stdio. */
static void test_status_pipe_off_stdio(void **state)
{
	(void)state;
	char out[128], err[128];
	snprintf(out, sizeof(out), "%s/stdio-out.log", tmpdir);
	snprintf(err, sizeof(err), "%s/stdio-err.log", tmpdir);
	pid_t t = fork();
	assert_true(t >= 0);
	if (t == 0) {
		close(0);
		close(1);
		close(2);
		struct hp_spawn_fs fs = {.files = {out, err},
					 .dup = {true, true}};
		const char *progs[2] = {"hp-test-no-such-program-anywhere",
					"/bin/sh"};
		for (int i = 0; i < 2; i++) {
			char **argv = strv(progs[i], "-c", "echo ran; exit 3",
					   NULL);
			char **envp = strv("A=1", NULL);
			struct hp_spawn sp = {.argv = argv, .envp = envp,
					      .stdout_fd = -1, .stderr_fd = -1,
					      .fs = &fs};
			struct hp_spawn_child c;
			if (hp_worker_spawn_begin(&sp, &c) != 0)
				_exit(20);
			burn(argv);
			burn(envp);
			enum hp_spawn_step step = HP_SPAWN_DUP;
			int rc = hp_worker_spawn_end(&c, &step);
			if (i == 0 && (rc != -ENOENT || step != HP_SPAWN_EXEC))
				_exit(21);
			if (i == 1) {
				int st;
				if (rc != 0 || waitpid(c.pid, &st, 0) != c.pid)
					_exit(22);
				if (!WIFEXITED(st) || WEXITSTATUS(st) != 3)
					_exit(23);
			}
		}
		_exit(0);
	}
	assert_int_equal(wait_exit(t), 0);
	char *o = read_file(out);
	assert_non_null(o);
	assert_string_equal(o, "ran\n");
	free(o);
}

/* The clone child must call no libc function (it shares our memory and
 * TLS): an interposed strlen flags any call made from another process.
 * (gcc >= 12 at -O2 turns worker.c's c_strlen loop into a strlen call.) */
static pid_t test_pid;
static volatile int libc_called_in_child;
size_t strlen(const char *s);
size_t strlen(const char *s)
{
	if (test_pid && syscall(SYS_getpid) != test_pid)
		libc_called_in_child = 1;
	const volatile char *v = s;
	size_t n = 0;
	while (v[n])
		n++;
	return n;
}

static void test_child_calls_no_libc(void **state)
{
	(void)state;
	const char *pre = getenv("LD_PRELOAD");
	const char *mode = getenv("HYPERPODRUN_SPAWN");
	if ((pre && strstr(pre, "vgpreload")) || (mode && !strcmp(mode, "fork")))
		skip(); /* a forked child's calls do not reach our memory */
	test_pid = getpid();
	libc_called_in_child = 0;
	int code;
	char *out = run(strv("sh", "-c", "echo x", NULL), strv("A=1", NULL),
			&code);
	test_pid = 0;
	assert_string_equal(out, "x\n");
	free(out);
	assert_int_equal(libc_called_in_child, 0);
}

static int setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/hp-test-worker.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_copies_survive_the_callers_free),
		cmocka_unit_test(test_path_search),
		cmocka_unit_test(test_missing_program),
		cmocka_unit_test(test_not_executable),
		cmocka_unit_test(test_script_without_shebang),
		cmocka_unit_test(test_log_files),
		cmocka_unit_test(test_unmakeable_dir),
		cmocka_unit_test(test_group_and_signals),
		cmocka_unit_test(test_group_of_64),
		cmocka_unit_test(test_refused_clone_falls_back_to_fork),
		cmocka_unit_test(test_status_pipe_off_stdio),
		cmocka_unit_test(test_child_calls_no_libc),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
