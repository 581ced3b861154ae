/* bench_status_client.c — a minimal wrk stand-in for bench_status.py when
 * wrk is not installed: T threads, C keep-alive connections in all, each
 * with one GET in flight, for D seconds; latencies go into a 1 us
 * histogram. Prints one line: "requests N errors E seconds S rps R p50_us
 * P p99_us Q max_us M". Loopback HTTP/1.1 only: it parses just the status
 * line and Content-Length. Not part of the build; the bench compiles it.
 * With RATE, the load is paced instead (wrk2's way): each connection's
 * requests are due at fixed times, RATE a second over all connections,
 * sent when due or when the previous reply is in, whichever is later, and
 * each latency counts from when the request was due, so a server that
 * falls behind pays for the requests it delayed: the p99 of two servers
 * at the same offered load.
 * usage: bench_status_client HOST PORT PATH CONNS THREADS SECONDS [RATE] */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HIST_US 200000 /* 200 ms; slower samples land in the last bucket */

struct conn {
	int fd;
	double sent; /* when the request in flight was due (paced) or sent */
	double due;  /* paced: when the next one is due */
	bool busy;   /* a request is in flight */
	char buf[65536];
	size_t len;
};

struct worker {
	pthread_t th;
	int nconn;
	unsigned long long done, errors;
	unsigned long long *hist;
	double max_s;
};

static struct sockaddr_in addr;
static char request[512];
static size_t request_len;
static double end_time;
static double interval; /* paced: seconds between one connection's requests */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int open_conn(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int send_req(struct conn *c)
{
	c->len = 0;
	c->busy = true;
	if (interval > 0) {
		c->sent = c->due;
		c->due += interval;
	} else {
		c->sent = now();
	}
	return write(c->fd, request, request_len) == (ssize_t)request_len ? 0 : -1;
}

/* Paced: sends every idle connection's due request; returns how long
 * until the next one is due (seconds; 1 when none is idle). */
static double send_due(struct conn *cs, int n, struct worker *w)
{
	double t = now(), next = 1;
	for (int i = 0; i < n; i++) {
		if (cs[i].busy)
			continue;
		if (cs[i].due <= t) {
			if (send_req(&cs[i]) < 0)
				w->errors++;
		} else if (cs[i].due - t < next) {
			next = cs[i].due - t;
		}
	}
	return next;
}

/* 1: a whole reply is in the buffer (code in *code), 0: need more. */
static int parse(struct conn *c, int *code, size_t *used)
{
	char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
	if (!end)
		return 0;
	size_t head = (size_t)(end - c->buf) + 4;
	*code = atoi(c->buf + 9);
	size_t body = 0;
	for (char *p = c->buf; p < end; p++) {
		if ((p == c->buf || p[-1] == '\n') &&
		    strncasecmp(p, "Content-Length:", 15) == 0)
			body = strtoul(p + 15, NULL, 10);
	}
	if (c->len < head + body)
		return 0;
	*used = head + body;
	return 1;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	int ep = epoll_create1(0);
	struct conn *cs = calloc((size_t)w->nconn, sizeof(*cs));
	double start = now();
	for (int i = 0; i < w->nconn; i++) {
		cs[i].fd = open_conn();
		/* spread the connections' schedules over one interval */
		cs[i].due = start + interval * i / w->nconn;
		if (interval > 0) {
			if (cs[i].fd < 0) {
				perror("connect");
				exit(1);
			}
		} else if (cs[i].fd < 0 || send_req(&cs[i]) < 0) {
			perror("connect");
			exit(1);
		}
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
		epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
	}
	struct epoll_event evs[256];
	while (now() < end_time) {
		int n;
		if (interval > 0) {
			double wait = send_due(cs, w->nconn, w);
			struct timespec ts = {(time_t)wait,
					      (long)((wait - (double)(time_t)wait) * 1e9)};
			n = epoll_pwait2(ep, evs, 256, &ts, NULL);
		} else {
			n = epoll_wait(ep, evs, 256, 100);
		}
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
			if (r <= 0) {
				/* closed or failed: count it and reconnect */
				w->errors++;
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				close(c->fd);
				c->fd = open_conn();
				c->busy = false;
				if (c->fd < 0 || (interval <= 0 && send_req(c) < 0)) {
					perror("reconnect");
					exit(1);
				}
				struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
				epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
				continue;
			}
			c->len += (size_t)r;
			int code;
			size_t used;
			if (!parse(c, &code, &used))
				continue;
			double lat = now() - c->sent;
			long us = (long)(lat * 1e6);
			w->hist[us < HIST_US ? us : HIST_US - 1]++;
			if (lat > w->max_s)
				w->max_s = lat;
			if (code != 200)
				w->errors++;
			w->done++;
			c->busy = false;
			if (interval <= 0 && send_req(c) < 0)
				w->errors++;
		}
	}
	for (int i = 0; i < w->nconn; i++)
		close(cs[i].fd);
	free(cs);
	close(ep);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 7 && argc != 8) {
		fprintf(stderr, "usage: %s HOST PORT PATH CONNS THREADS SECONDS [RATE]\n",
			argv[0]);
		return 2;
	}
	addr.sin_family = AF_INET;
	addr.sin_port = htons((unsigned short)atoi(argv[2]));
	inet_pton(AF_INET, argv[1], &addr.sin_addr);
	request_len = (size_t)snprintf(request, sizeof(request),
				       "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", argv[3], argv[1]);
	int conns = atoi(argv[4]), threads = atoi(argv[5]);
	double secs = atof(argv[6]);
	if (threads < 1 || conns < threads)
		return 2;
	if (argc == 8) {
		double rate = atof(argv[7]);
		if (rate <= 0)
			return 2;
		interval = conns / rate;
	}
	struct worker *ws = calloc((size_t)threads, sizeof(*ws));
	double t0 = now();
	end_time = t0 + secs;
	for (int i = 0; i < threads; i++) {
		ws[i].nconn = conns / threads + (i < conns % threads);
		ws[i].hist = calloc(HIST_US, sizeof(unsigned long long));
		pthread_create(&ws[i].th, NULL, run, &ws[i]);
	}
	unsigned long long done = 0, errors = 0;
	double max_s = 0;
	static unsigned long long hist[HIST_US];
	for (int i = 0; i < threads; i++) {
		pthread_join(ws[i].th, NULL);
		done += ws[i].done;
		errors += ws[i].errors;
		if (ws[i].max_s > max_s)
			max_s = ws[i].max_s;
		for (long k = 0; k < HIST_US; k++)
			hist[k] += ws[i].hist[k];
		free(ws[i].hist);
	}
	double elapsed = now() - t0;
	long p50 = -1, p99 = -1;
	unsigned long long acc = 0;
	for (long k = 0; k < HIST_US && done; k++) {
		acc += hist[k];
		if (p50 < 0 && acc * 100 >= done * 50)
			p50 = k;
		if (p99 < 0 && acc * 100 >= done * 99) {
			p99 = k;
			break;
		}
	}
	printf("requests %llu errors %llu seconds %.3f rps %.0f p50_us %ld p99_us %ld max_us %.0f\n",
	       done, errors, elapsed, (double)done / elapsed, p50, p99, max_s * 1e6);
	free(ws);
	return 0;
}
