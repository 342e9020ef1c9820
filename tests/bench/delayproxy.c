/*
 * delayproxy.c - a TCP proxy on 127.0.0.1 that delays every byte by a
 * fixed time in each direction: a backend server "on another machine" for
 * the benchmarks, on a box without netem.  A round trip through it costs
 * twice the delay more than one straight to the server, so many callers
 * are bound by the link and not by this box's two cores: what one daemon
 * gets then shows whether it keeps as many requests in flight as it has
 * callers (issue 12's throughput across files).  A measuring tool, not a
 * test.
 *
 * usage: delayproxy DELAY_US LISTEN_PORT SERVER_PORT
 * Prints "ready" on stdout once it listens; runs until killed.  One
 * thread, epoll; bytes keep their order; a side that closes closes the
 * other once what it sent has been delivered.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4(), epoll_pwait2() */
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK_MAX 65536

struct chunk {
	struct chunk *next;
	uint64_t due_us;
	size_t len, off;
	char data[];
};

/* one direction: bytes read from @from, written to @to after the delay */
struct pipe_dir {
	int from, to;
	struct chunk *head, **tail;
	int eof;	       /* @from closed: shut @to down once drained */
	struct pipe_dir *peer; /* the other direction */
};

struct conn {
	struct pipe_dir dir[2]; /* 0: client -> server, 1: back */
	int closed;
};

static uint64_t delay_us;

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000;
}

static int listen_on(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(fd, 512) < 0) {
		perror("delayproxy: listen");
		exit(1);
	}
	return fd;
}

static int connect_to(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
		close(fd);
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static void conn_free(int ep, struct conn *c)
{
	for (int i = 0; i < 2; i++) {
		struct pipe_dir *d = &c->dir[i];

		while (d->head) {
			struct chunk *k = d->head;

			d->head = k->next;
			free(k);
		}
	}
	epoll_ctl(ep, EPOLL_CTL_DEL, c->dir[0].from, NULL);
	epoll_ctl(ep, EPOLL_CTL_DEL, c->dir[1].from, NULL);
	close(c->dir[0].from);
	close(c->dir[1].from);
	c->closed = 1;
}

/* read what @d's source has; 0, or -1: the connection is over */
static int pump_in(struct pipe_dir *d)
{
	for (;;) {
		struct chunk *k = malloc(sizeof(*k) + CHUNK_MAX);
		ssize_t n;

		if (!k)
			return -1;
		n = read(d->from, k->data, CHUNK_MAX);
		if (n <= 0) {
			free(k);
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				return 0;
			if (n < 0)
				return -1;
			d->eof = 1;
			return 0;
		}
		k->next = NULL;
		k->len = (size_t)n;
		k->off = 0;
		k->due_us = now_us() + delay_us;
		*d->tail = k;
		d->tail = &k->next;
	}
}

/* write @d's chunks that are due; a full socket keeps the rest */
static int pump_out(struct pipe_dir *d, uint64_t now)
{
	while (d->head && d->head->due_us <= now) {
		struct chunk *k = d->head;
		ssize_t n = write(d->to, k->data + k->off, k->len - k->off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? 0 : -1;
		}
		k->off += (size_t)n;
		if (k->off < k->len)
			continue;
		d->head = k->next;
		if (!d->head)
			d->tail = &d->head;
		free(k);
	}
	if (d->eof && !d->head)
		shutdown(d->to, SHUT_WR);
	return 0;
}

int main(int argc, char **argv)
{
	struct conn **conns = NULL;
	size_t nconns = 0;
	int lfd, ep, server_port;
	struct epoll_event ev = { .events = EPOLLIN };

	if (argc != 4) {
		fprintf(stderr, "usage: delayproxy DELAY_US LISTEN_PORT "
				"SERVER_PORT\n");
		return 2;
	}
	delay_us = strtoull(argv[1], NULL, 10);
	lfd = listen_on(atoi(argv[2]));
	server_port = atoi(argv[3]);
	ep = epoll_create1(0);
	ev.data.ptr = NULL;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		struct epoll_event evs[64];
		uint64_t now = now_us(), next = UINT64_MAX;
		struct timespec ts = { 1, 0 };
		int n;

		for (size_t i = 0; i < nconns; i++)
			for (int j = 0; j < 2 && !conns[i]->closed; j++)
				if (conns[i]->dir[j].head &&
				    conns[i]->dir[j].head->due_us < next)
					next = conns[i]->dir[j].head->due_us;
		if (next != UINT64_MAX) {
			uint64_t us = next > now ? next - now : 0;

			ts.tv_sec = (time_t)(us / 1000000);
			ts.tv_nsec = (long)(us % 1000000) * 1000;
		}
		n = epoll_pwait2(ep, evs, 64, &ts, NULL);
		for (int i = 0; i < n; i++) {
			struct pipe_dir *d = evs[i].data.ptr;

			if (!d) {
				int cfd =
					accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
				int sfd, one = 1;
				struct conn *c, **p;

				if (cfd < 0)
					continue;
				sfd = connect_to(server_port);
				c = calloc(1, sizeof(*c));
				p = realloc(conns,
					    (nconns + 1) * sizeof(*conns));
				if (sfd < 0 || !c || !p) {
					close(cfd);
					if (sfd >= 0)
						close(sfd);
					free(c);
					if (p)
						conns = p;
					continue;
				}
				conns = p;
				conns[nconns++] = c;
				setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one,
					   sizeof(one));
				c->dir[0] = (struct pipe_dir){ .from = cfd,
							       .to = sfd };
				c->dir[1] = (struct pipe_dir){ .from = sfd,
							       .to = cfd };
				for (int j = 0; j < 2; j++) {
					c->dir[j].tail = &c->dir[j].head;
					c->dir[j].peer = &c->dir[1 - j];
				}
				ev.events = EPOLLIN;
				ev.data.ptr = &c->dir[0];
				epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev);
				ev.data.ptr = &c->dir[1];
				epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);
				continue;
			}
			if (pump_in(d) < 0 || (d->eof && d->peer->eof)) {
				for (size_t k = 0; k < nconns; k++)
					if (&conns[k]->dir[0] == d ||
					    &conns[k]->dir[1] == d)
						conn_free(ep, conns[k]);
				continue;
			}
			if (d->eof)
				epoll_ctl(ep, EPOLL_CTL_DEL, d->from, NULL);
		}
		now = now_us();
		for (size_t i = 0; i < nconns; i++) {
			struct conn *c = conns[i];

			for (int j = 0; j < 2 && !c->closed; j++)
				if (pump_out(&c->dir[j], now) < 0)
					conn_free(ep, c);
		}
		/* forget closed connections */
		for (size_t i = 0; i < nconns;) {
			if (conns[i]->closed) {
				free(conns[i]);
				conns[i] = conns[--nconns];
			} else {
				i++;
			}
		}
	}
}
