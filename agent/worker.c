/* worker.c — the one place hyperpodrun starts a process: clone(CLONE_VM)
 * on a stack of the child's own (below), or fork() where that is not
 * possible. Either way the child runs child_main() on a private copy of
 * its arguments and does only its process group, signals, its log
 * directories and files, exec, by raw system calls. Signals are blocked
 * around the start so that no handler runs in the child before its
 * dispositions are reset (libuv's process.c does the same). Never reaps a
 * worker that exec'd: that is agent.c's job. */
#include "worker.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

void hp_worker_signals_set(sigset_t *set)
{
	sigemptyset(set);
	for (int sig = 1; sig < NSIG; sig++) {
		struct sigaction sa;
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		/* a signal we cannot query is reset, as before */
		if (sigaction(sig, NULL, &sa) < 0 ||
		    sa.sa_handler != SIG_DFL)
			sigaddset(set, sig);
	}
}

/* --- the child and its start --------------------------------------------
 *
 * fork() copies the agent's page tables (two threads, libevent, libuv: a
 * few MB mapped) and makes every page the agent then writes copy-on-write:
 * most of what a launch or restart costs beyond the floor. A child made
 * by clone(CLONE_VM) shares the agent's memory instead, and runs on a
 * small stack of its own until execve() gives it a new address space, as
 * posix_spawn's child does, but without CLONE_VFORK: the agent does not
 * wait for it (a vfork-style wait made each start wait for its child to
 * be scheduled, and restarts under load slower).
 *
 * Sharing memory with a running agent, the child must touch nothing the
 * agent uses: it reads one block (struct clone_blk) that the agent filled
 * and does not touch again until the child has exec'd or died (the
 * kernel clears its CLONE_CHILD_CLEARTID word), and it calls the kernel
 * directly: a libc wrapper would set errno, which is the agent's (the
 * child shares the calling thread's TLS). Its signals stay blocked until every handled one
 * is back at SIG_DFL, so none of the agent's handlers runs in it. Where
 * the architecture has no raw-syscall stub here, under valgrind (which
 * refuses such a clone), with HYPERPODRUN_SPAWN=fork or once a clone was
 * refused, fork() starts the same child_main() on a copy of the block. */

#include <linux/futex.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#if defined(__x86_64__) || defined(__aarch64__)
#define HP_HAVE_CLONE_SPAWN 1
#else
#define HP_HAVE_CLONE_SPAWN 0
#endif

#if defined(__clang__) || __GNUC__ >= 8
#define CHILD_CODE __attribute__((no_sanitize("address", "undefined")))
#else
#define CHILD_CODE
#endif

/* A system call that returns -errno and writes no errno: the stubs below,
 * or, where there are none (and so no clone path: only a forked child,
 * whose errno is its own, runs the child code), libc's syscall(). */
CHILD_CODE static inline long raw_sc(long n, long a, long b, long c, long d)
{
#if !HP_HAVE_CLONE_SPAWN
	long r = syscall(n, a, b, c, d);
	return r < 0 ? -errno : r;
#elif defined(__x86_64__)
	long ret;
	register long r10 __asm__("r10") = d;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
			 : "rcx", "r11", "memory");
	return ret;
#else
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	__asm__ volatile("svc 0"
			 : "+r"(x0)
			 : "r"(x8), "r"(x1), "r"(x2), "r"(x3)
			 : "memory", "cc");
	return x0;
#endif
}

/* the kernel's struct sigaction (x86_64 and the generic one of arm64) */
struct kernel_sigaction {
	void (*handler)(int);
	unsigned long flags;
	void (*restorer)(void);
	unsigned long mask;
};

/* Everything the child reads, in one mapping with its stack: copied, so
 * the agent may free or reuse its own argv, envp and paths at once. */
struct clone_blk {
	char **argv;     /* argv[-1] is free for "/bin/sh" (ENOEXEC) */
	char **envp;
	const char *path; /* PATH to search when argv[0] has no '/' */
	const char *dirs[2], *stale, *files[2];
	bool dup[2];
	int stdout_fd, stderr_fd;
	bool keep_pgrp;
	int nreset;
	unsigned char reset[NSIG]; /* signals to set back to SIG_DFL */
	int errpipe;
	pid_t parent;
	/* nonzero until the child has left our address space: the kernel
	 * clears it and wakes a futex on it (CLONE_CHILD_CLEARTID) in execve
	 * or exit, the signal pthread_join frees a stack on */
	pid_t left_mm;
	char pathbuf[4096 + 256]; /* a PATH candidate */
};

#define CLONE_STACK (32 * 1024)

CHILD_CODE static size_t c_strlen(const char *s)
{
	size_t n = 0;
	while (s[n]) {
		n++;
		/* no strlen() call: gcc >= 12 turns this loop into one */
		__asm__("" : "+r"(n));
	}
	return n;
}

CHILD_CODE static HP_NORETURN void c_fail(struct clone_blk *b, long err,
					   enum hp_spawn_step step)
{
	int msg[2] = {err < 0 ? (int)-err : EIO, (int)step};
	while (raw_sc(SYS_write, b->errpipe, (long)msg, sizeof(msg), 0) ==
	       -EINTR)
		;
	for (;;)
		raw_sc(SYS_exit_group, 127, 0, 0, 0);
}

/* fd onto target, without close-on-exec (dup3 refuses equal fds) */
CHILD_CODE static long c_dup_onto(long fd, long target)
{
	if (fd == target)
		return raw_sc(SYS_fcntl, fd, F_SETFD, 0, 0);
	return raw_sc(SYS_dup3, fd, target, 0, 0);
}

/* execve, then /bin/sh on ENOEXEC, as glibc's execvpe does; returns the
 * (negative) error */
CHILD_CODE static long c_exec1(struct clone_blk *b, const char *file)
{
	long rc = raw_sc(SYS_execve, (long)file, (long)b->argv,
			 (long)b->envp, 0);
	if (rc == -ENOEXEC) {
		char **sh = b->argv - 1;
		char *arg0 = b->argv[0];
		sh[0] = (char *)"/bin/sh";
		b->argv[0] = (char *)file;
		/* as glibc: the shell's error is the one that counts */
		rc = raw_sc(SYS_execve, (long)"/bin/sh", (long)sh,
			    (long)b->envp, 0);
		b->argv[0] = arg0;
	}
	return rc;
}

/* glibc's execvpe: the PATH search, EACCES remembered, the errors that
 * mean "not here" skipped */
CHILD_CODE static long c_execvpe(struct clone_blk *b)
{
	const char *file = b->argv[0];
	if (!*file)
		return -ENOENT;
	for (const char *c = file; *c; c++)
		if (*c == '/')
			return c_exec1(b, file);
	size_t flen = c_strlen(file);
	if (flen > 256)
		return -ENAMETOOLONG;
	bool eacces = false;
	long rc = -ENOENT;
	for (const char *p = b->path;; p++) {
		const char *e = p;
		while (*e && *e != ':')
			e++;
		size_t dl = (size_t)(e - p);
		if (dl < sizeof(b->pathbuf) - flen - 2) {
			char *o = b->pathbuf;
			/* the empty asm keeps gcc from making these loops
			 * memcpy() calls, as it made c_strlen's strlen() */
			for (size_t i = 0; i < dl; i++) {
				*o++ = p[i];
				__asm__("" : "+r"(o));
			}
			if (dl)
				*o++ = '/';
			for (size_t i = 0; i <= flen; i++) {
				*o++ = file[i];
				__asm__("" : "+r"(o));
			}
			rc = c_exec1(b, b->pathbuf);
			switch (rc) {
			case -EACCES:
				eacces = true;
				break;
			case -ENOENT:
			case -ESTALE:
			case -ENOTDIR:
			case -ENODEV:
			case -ETIMEDOUT:
				break;
			default:
				return rc;
			}
		}
		if (!*e)
			break;
		p = e;
	}
	return eacces ? -EACCES : rc;
}

/* The child, started by clone or fork: never returns. */
CHILD_CODE static int child_main(void *arg)
{
	struct clone_blk *b = arg;
	if (!b->keep_pgrp)
		raw_sc(SYS_setpgid, 0, 0, 0, 0);
	if (raw_sc(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0) == 0 &&
	    raw_sc(SYS_getppid, 0, 0, 0, 0) != b->parent)
		for (;;)
			raw_sc(SYS_exit_group, 127, 0, 0, 0);
	struct kernel_sigaction dfl = {0};
	dfl.handler = SIG_DFL;
	for (int i = 0; i < b->nreset; i++)
		raw_sc(SYS_rt_sigaction, b->reset[i], (long)&dfl, 0, 8);
	unsigned long none = 0;
	raw_sc(SYS_rt_sigprocmask, SIG_SETMASK, (long)&none, 0, 8);

	bool existed = false;
	for (int i = 0; i < 2; i++) {
		if (!b->dirs[i])
			continue;
		long rc = raw_sc(SYS_mkdirat, AT_FDCWD, (long)b->dirs[i], 0755,
				 0);
		existed = rc < 0;
		if (rc < 0 && rc != -EEXIST)
			c_fail(b, rc, (enum hp_spawn_step)(HP_SPAWN_DIR0 + i));
	}
	if (existed && b->stale)
		raw_sc(SYS_unlinkat, AT_FDCWD, (long)b->stale, 0, 0);
	for (int s = 0; s < 2; s++) {
		if (!b->files[s])
			continue;
		long fd = raw_sc(SYS_openat, AT_FDCWD, (long)b->files[s],
				 O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
				 0644);
		if (fd < 0)
			c_fail(b, fd, (enum hp_spawn_step)(HP_SPAWN_FILE0 + s));
		if (b->dup[s]) {
			long rc = c_dup_onto(fd, s + 1);
			if (rc < 0)
				c_fail(b, rc, HP_SPAWN_DUP);
		}
		if (fd != s + 1 || !b->dup[s])
			raw_sc(SYS_close, fd, 0, 0, 0);
	}
	long rc;
	if (b->stdout_fd >= 0 &&
	    (rc = c_dup_onto(b->stdout_fd, STDOUT_FILENO)) < 0)
		c_fail(b, rc, HP_SPAWN_DUP);
	if (b->stderr_fd >= 0 &&
	    (rc = c_dup_onto(b->stderr_fd, STDERR_FILENO)) < 0)
		c_fail(b, rc, HP_SPAWN_DUP);
	c_fail(b, c_execvpe(b), HP_SPAWN_EXEC);
}

static size_t strv_bytes(char *const *v, size_t *n)
{
	size_t bytes = 0, i = 0;
	for (; v && v[i]; i++)
		bytes += strlen(v[i]) + 1;
	*n = i;
	return bytes;
}

/* copies s into *at, returns the copy */
static char *put_str(char **at, const char *s)
{
	if (!s)
		return NULL;
	size_t l = strlen(s) + 1;
	char *d = memcpy(*at, s, l);
	*at += l;
	return d;
}

static char **put_strv(char ***slots, char **at, char *const *v, size_t n)
{
	char **out = *slots;
	for (size_t i = 0; i < n; i++)
		out[i] = put_str(at, v[i]);
	out[n] = NULL;
	*slots += n + 1;
	return out;
}

/* Lays out the block, its strings and the stack in one mapping. */
static struct clone_blk *clone_blk_new(const struct hp_spawn *sp, int errpipe,
				       pid_t parent, size_t *len)
{
	size_t na, ne;
	const char *path = getenv("PATH");
	if (!path)
		path = "/bin:/usr/bin"; /* glibc's default for execvpe */
	size_t strs = strv_bytes(sp->argv, &na) + strv_bytes(sp->envp, &ne) +
		      strlen(path) + 1;
	const struct hp_spawn_fs *fs = sp->fs;
	const char *fsstr[5] = {fs ? fs->dirs[0] : NULL, fs ? fs->dirs[1] : NULL,
				fs ? fs->stale : NULL, fs ? fs->files[0] : NULL,
				fs ? fs->files[1] : NULL};
	for (int i = 0; i < 5; i++)
		strs += fsstr[i] ? strlen(fsstr[i]) + 1 : 0;
	size_t slots = (na + 2) + (ne + 1);
	size_t head = (sizeof(struct clone_blk) + slots * sizeof(char *) + 15) &
		      ~(size_t)15;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	*len = (head + strs + CLONE_STACK + page - 1) & ~(page - 1);
	void *m = mmap(NULL, *len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	struct clone_blk *b = m;
	char **sv = (char **)(b + 1);
	char *at = (char *)m + head;
	sv++; /* argv[-1] */
	b->argv = put_strv(&sv, &at, sp->argv, na);
	b->envp = put_strv(&sv, &at, sp->envp, ne);
	b->path = put_str(&at, path);
	b->dirs[0] = put_str(&at, fsstr[0]);
	b->dirs[1] = put_str(&at, fsstr[1]);
	b->stale = put_str(&at, fsstr[2]);
	b->files[0] = put_str(&at, fsstr[3]);
	b->files[1] = put_str(&at, fsstr[4]);
	b->dup[0] = fs && fs->dup[0];
	b->dup[1] = fs && fs->dup[1];
	b->stdout_fd = sp->stdout_fd;
	b->stderr_fd = sp->stderr_fd;
	b->keep_pgrp = sp->keep_pgrp;
	for (int sig = 1; sig < NSIG; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		if (sp->reset && sigismember(sp->reset, sig) != 1)
			continue;
		b->reset[b->nreset++] = (unsigned char)sig;
	}
	/* glibc's own two (SIGCANCEL, SIGSETXID), which no sigset_t of its
	 * holds: their handler must not run in the child either */
	if (sp->reset)
		for (int sig = 32; sig <= 33 && sig < NSIG; sig++)
			b->reset[b->nreset++] = (unsigned char)sig;
	b->errpipe = errpipe;
	b->parent = parent;
	b->left_mm = -1;
	return b;
}

/* clone, or fork: decided once, and fork for good once a clone was
 * refused (qemu-user accepts CLONE_VM only for threads; a seccomp
 * profile may refuse it) */
static int clone_ok = -1;

static bool use_clone(void)
{
	if (!HP_HAVE_CLONE_SPAWN)
		return false;
	if (clone_ok < 0) {
		const char *mode = getenv("HYPERPODRUN_SPAWN");
		const char *pre = getenv("LD_PRELOAD");
		clone_ok = !(mode && strcmp(mode, "fork") == 0) &&
			   !(pre && strstr(pre, "vgpreload"));
	}
	return clone_ok;
}

int hp_worker_spawn_begin(const struct hp_spawn *sp,
			  struct hp_spawn_child *out)
{
	int p[2];
	out->pid = 0;
	out->errfd = -1;
	out->mem = NULL;
	out->mem_len = 0;
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	/* the child's dup3s onto 1 and 2 must not close its end early: that
	 * EOF would read as "exec'd" (and, on the clone path, unmap the
	 * stack it runs on) */
	for (int i = 0; i < 2; i++) {
		if (p[i] > STDERR_FILENO)
			continue;
		int fd = fcntl(p[i], F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
		if (fd < 0) {
			int e = errno;
			close(p[0]);
			close(p[1]);
			return -e;
		}
		close(p[i]);
		p[i] = fd;
	}
	size_t len;
	struct clone_blk *b = clone_blk_new(sp, p[1], getpid(), &len);
	if (!b) {
		int e = errno;
		close(p[0]);
		close(p[1]);
		return -e;
	}

	/* every signal blocked, glibc's two included (its sigfillset leaves
	 * them out), as posix_spawn does: the child starts with this mask */
	unsigned long all = ~0UL, old = 0;
	raw_sc(SYS_rt_sigprocmask, SIG_SETMASK, (long)&all, (long)&old, 8);
	pid_t c = -1;
	int spawn_errno = 0;
	bool cloned = false;
	if (use_clone()) {
		c = clone(child_main, (char *)b + len,
			  CLONE_VM | CLONE_CHILD_CLEARTID | SIGCHLD, b, NULL,
			  NULL, &b->left_mm);
		spawn_errno = errno;
		cloned = c > 0;
		if (c < 0 && (spawn_errno == EINVAL || spawn_errno == ENOSYS ||
			      spawn_errno == EPERM))
			clone_ok = 0; /* refused: fork, now and from now on */
	}
	if (!use_clone()) {
		c = fork();
		if (c == 0)
			child_main(b);
		spawn_errno = errno;
	}
	raw_sc(SYS_rt_sigprocmask, SIG_SETMASK, (long)&old, 0, 8);
	if (cloned) {
		out->mem = b;
		out->mem_len = len;
	} else {
		munmap(b, len); /* a forked child has its own copy */
	}
	close(p[1]);
	if (c < 0) {
		close(p[0]);
		return -spawn_errno;
	}
	/* Also set the group from the parent: whichever runs first wins, and
	 * a kill(-pid) right after we return must reach the child. */
	if (!sp->keep_pgrp)
		setpgid(c, c);
	out->pid = c;
	out->errfd = p[0];
	return 0;
}

int hp_worker_spawn_end(struct hp_spawn_child *c, enum hp_spawn_step *step)
{
	int msg[2] = {0, HP_SPAWN_EXEC};
	ssize_t n;
	do {
		n = read(c->errfd, msg, sizeof(msg));
	} while (n < 0 && errno == EINTR);
	close(c->errfd);
	c->errfd = -1;
	int rc = 0;
	if (n == (ssize_t)sizeof(msg)) {
		int st;
		while (waitpid(c->pid, &st, 0) < 0 && errno == EINTR)
			;
		if (step)
			*step = msg[1] >= HP_SPAWN_EXEC && msg[1] <= HP_SPAWN_DUP
					? (enum hp_spawn_step)msg[1]
					: HP_SPAWN_EXEC;
		rc = msg[0] > 0 ? -msg[0] : -EIO;
	}
	/* EOF: the CLOEXEC end closed on a successful exec, after the child
	 * left our address space (or it died, which also leaves it); an
	 * error: the child is reaped. Its stack is free either way. */
	if (c->mem) {
		/* not the EOF: the child may have closed its end itself */
		struct clone_blk *b = c->mem;
		pid_t v;
		while ((v = __atomic_load_n(&b->left_mm, __ATOMIC_ACQUIRE)))
			syscall(SYS_futex, &b->left_mm, FUTEX_WAIT, v, NULL,
				NULL, 0); /* shared: the kernel's wake is */
		munmap(c->mem, c->mem_len);
	}
	c->mem = NULL;
	return rc;
}

int hp_worker_spawn(const struct hp_spawn *sp, pid_t *pid,
		    enum hp_spawn_step *step)
{
	struct hp_spawn_child c;
	int rc = hp_worker_spawn_begin(sp, &c);
	if (rc < 0)
		return rc;
	rc = hp_worker_spawn_end(&c, step);
	if (rc == 0)
		*pid = c.pid;
	return rc;
}

const char *hp_spawn_step_path(const struct hp_spawn_fs *fs,
			       enum hp_spawn_step step)
{
	if (!fs)
		return NULL;
	switch (step) {
	case HP_SPAWN_DIR0:
	case HP_SPAWN_DIR1:
		return fs->dirs[step - HP_SPAWN_DIR0];
	case HP_SPAWN_FILE0:
	case HP_SPAWN_FILE1:
		return fs->files[step - HP_SPAWN_FILE0];
	default:
		return NULL;
	}
}

int hp_worker_signal(pid_t pgid, int sig)
{
	if (pgid <= 0)
		return -EINVAL;
	if (kill(-pgid, sig) < 0 && errno != ESRCH) {
		/* the group may be gone while the leader is a zombie: try it */
		if (kill(pgid, sig) < 0 && errno != ESRCH)
			return -errno;
	}
	return 0;
}

bool hp_worker_tty_foreground(void)
{
	if (!isatty(STDIN_FILENO))
		return false;
	pid_t fg = tcgetpgrp(STDIN_FILENO);
	return fg > 0 && fg == getpgrp();
}

/* The parent pid in /proc/<pid>/stat, or -1. */
static pid_t parent_of(const char *pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%s/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	/* "pid (comm) state ppid ...": comm may hold spaces and ')' */
	char *p = strrchr(buf, ')');
	if (!p || p[1] != ' ' || !p[2] || p[3] != ' ')
		return -1;
	return (pid_t)strtol(p + 4, NULL, 10);
}

int hp_worker_signal_children(int sig)
{
	DIR *d = opendir("/proc");
	if (!d)
		return 0;
	pid_t me = getpid();
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		if (parent_of(e->d_name) != me)
			continue;
		if (kill((pid_t)strtol(e->d_name, NULL, 10), sig) == 0)
			n++;
	}
	closedir(d);
	return n;
}
