/* The offload suite's own cases, run unmodified under knic-offload (tests/offload.rs):
 * errno, partial I/O, socket timeouts, signals (SA_RESTART), TX timestamps on the error
 * queue, interface ioctls, sendmmsg/recvmmsg, dup/fork/exec,
 * poll/select/epoll on mixes of host and offloaded fds.
 * Each case prints "ok NAME"; the first failure prints "FAIL NAME: why" and exits 1.
 * Run in a network namespace whose loopback is down, so a socket that reached the host
 * stack instead of the library fails. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/errqueue.h>
#include <net/if.h>
#include <linux/net_tstamp.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *current = "?";
#define CHECK(cond, ...)                                                            \
	do {                                                                        \
		if (!(cond)) {                                                      \
			printf("FAIL %s (line %d, errno %d %s): ", current, __LINE__, \
			       errno, strerror(errno));                             \
			printf(__VA_ARGS__);                                        \
			printf("\n");                                               \
			exit(1);                                                    \
		}                                                                   \
	} while (0)
#define CASE(name) current = name
#define OK() printf("ok %s\n", current)

static struct sockaddr_in loop4(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

static int listener(int *port)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(s >= 0, "socket");
	int one = 1;
	CHECK(setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0, "SO_REUSEADDR");
	struct sockaddr_in a = loop4(0);
	CHECK(bind(s, (void *)&a, sizeof a) == 0, "bind");
	CHECK(listen(s, 16) == 0, "listen");
	socklen_t l = sizeof a;
	CHECK(getsockname(s, (void *)&a, &l) == 0 && l == sizeof a, "getsockname");
	*port = ntohs(a.sin_port);
	CHECK(*port != 0, "ephemeral port");
	return s;
}

/* A connected pair (client, server side) over the library's loopback. */
static void pair(int *c, int *s)
{
	int port, l = listener(&port);
	*c = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(*c >= 0, "socket");
	struct sockaddr_in a = loop4(port);
	CHECK(connect(*c, (void *)&a, sizeof a) == 0, "blocking connect");
	*s = accept(l, NULL, NULL);
	CHECK(*s >= 0, "accept");
	close(l);
}

static long ms_since(struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

static void errors(void)
{
	CASE("errno");
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = loop4(1);
	errno = 0;
	CHECK(connect(s, (void *)&a, sizeof a) == -1 && errno == ECONNREFUSED, "connect to a closed port");
	close(s);
	int port, l = listener(&port);
	s = socket(AF_INET, SOCK_STREAM, 0);
	a = loop4(port);
	CHECK(bind(s, (void *)&a, sizeof a) == -1 && errno == EADDRINUSE, "second bind");
	CHECK(bind(s, (void *)&a, 3) == -1 && errno == EINVAL, "short address");
	int v;
	socklen_t vl = sizeof v;
	CHECK(getsockopt(s, SOL_SOCKET, 12345, &v, &vl) == -1 && errno == ENOPROTOOPT, "unknown option");
	char b;
	CHECK(read(s, &b, 1) == -1 && errno == ENOTCONN, "read unconnected");
	CHECK(fcntl(l, F_SETFL, O_NONBLOCK) == 0, "O_NONBLOCK");
	CHECK(accept(l, NULL, NULL) == -1 && errno == EAGAIN, "non-blocking accept");
	CHECK(accept4(l, NULL, NULL, 0x40000000) == -1 && errno == EINVAL, "accept4 bad flags");
	int sp[2];
	CHECK(socketpair(AF_INET, SOCK_STREAM, 0, sp) == -1 && errno == EOPNOTSUPP, "socketpair AF_INET");
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0, "socketpair AF_UNIX stays on the host");
	close(sp[0]), close(sp[1]), close(s), close(l);
	/* close is synchronous: the port is free once close returns. */
	for (int i = 0; i < 20; i++) {
		int again = socket(AF_INET, SOCK_STREAM, 0);
		a = loop4(port);
		CHECK(bind(again, (void *)&a, sizeof a) == 0, "bind right after close (round %d)", i);
		CHECK(listen(again, 1) == 0, "listen");
		close(again);
	}
	OK();
}

static void nonblocking_connect(void)
{
	CASE("nonblocking-connect");
	int port, l = listener(&port);
	int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct sockaddr_in a = loop4(port);
	int r = connect(c, (void *)&a, sizeof a);
	CHECK(r == 0 || errno == EINPROGRESS, "connect: %d", r);
	struct pollfd p = { .fd = c, .events = POLLOUT };
	CHECK(poll(&p, 1, 5000) == 1 && (p.revents & POLLOUT), "poll POLLOUT (revents %x)", p.revents);
	int err = -1;
	socklen_t el = sizeof err;
	CHECK(getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0, "SO_ERROR %d", err);
	int s = accept(l, NULL, NULL);
	CHECK(s >= 0, "accept");
	struct sockaddr_in x, y;
	socklen_t xl = sizeof x, yl = sizeof y;
	CHECK(getsockname(c, (void *)&x, &xl) == 0 && getpeername(s, (void *)&y, &yl) == 0, "names");
	CHECK(x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr, "peer = local");
	/* Refused, non-blocking: EINPROGRESS, then SO_ERROR says ECONNREFUSED. */
	int d = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	a = loop4(1);
	r = connect(d, (void *)&a, sizeof a);
	CHECK(r == -1 && (errno == EINPROGRESS || errno == ECONNREFUSED), "refused connect");
	if (errno == EINPROGRESS) {
		p.fd = d;
		p.events = POLLOUT;
		CHECK(poll(&p, 1, 5000) == 1, "poll refused");
		el = sizeof err;
		CHECK(getsockopt(d, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == ECONNREFUSED, "SO_ERROR %d", err);
	}
	close(d), close(c), close(s), close(l);
	OK();
}

static void partial_io(void)
{
	CASE("partial-io");
	int c, s;
	pair(&c, &s);
	int on = 1;
	CHECK(ioctl(c, FIONBIO, &on) == 0, "FIONBIO");
	CHECK(fcntl(c, F_GETFL) & O_NONBLOCK, "FIONBIO shows in F_GETFL");
	static char buf[1 << 20];
	memset(buf, 'x', sizeof buf);
	long total = 0;
	for (;;) {
		ssize_t n = write(c, buf, sizeof buf);
		if (n < 0) {
			CHECK(errno == EAGAIN, "write");
			break;
		}
		total += n;
		CHECK(total < (1L << 30), "never fills");
	}
	CHECK(total > 0, "some bytes before EAGAIN");
	int q = 0;
	CHECK(ioctl(c, TIOCOUTQ, &q) == 0 && q > 0, "SIOCOUTQ %d", q);
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int avail = 0;
	while (avail == 0 && ms_since(&t0) < 5000)
		CHECK(ioctl(s, FIONREAD, &avail) == 0, "FIONREAD");
	CHECK(avail > 0, "FIONREAD %d", avail);
	long got = 0;
	while (got < total) {
		ssize_t n = read(s, buf, sizeof buf);
		CHECK(n > 0, "read %zd after %ld of %ld", n, got, total);
		got += n;
	}
	CHECK(got == total, "read %ld of %ld", got, total);
	/* Blocking MSG_WAITALL waits for all it asked for. */
	CHECK(write(c, "abc", 3) == 3, "write");
	if (fork() == 0) {
		usleep(100000);
		on = 0;
		ioctl(c, FIONBIO, &on);
		write(c, "defgh", 5);
		_exit(0);
	}
	char w[8];
	CHECK(recv(s, w, 8, MSG_WAITALL) == 8 && memcmp(w, "abcdefgh", 8) == 0, "MSG_WAITALL");
	wait(NULL);
	/* MSG_PEEK keeps the data. */
	CHECK(write(c, "z", 1) == 1, "write");
	struct pollfd p = { .fd = s, .events = POLLIN };
	CHECK(poll(&p, 1, 5000) == 1, "poll");
	CHECK(recv(s, w, 1, MSG_PEEK) == 1 && recv(s, w + 1, 1, 0) == 1 && w[0] == 'z' && w[1] == 'z', "peek");
	/* shutdown: the peer reads EOF; writing after SHUT_WR is EPIPE (MSG_NOSIGNAL). */
	CHECK(shutdown(c, SHUT_WR) == 0, "shutdown");
	CHECK(read(s, w, 1) == 0, "EOF after shutdown");
	CHECK(send(c, "q", 1, MSG_NOSIGNAL) == -1 && errno == EPIPE, "EPIPE");
	signal(SIGPIPE, SIG_IGN);
	CHECK(write(c, "q", 1) == -1 && errno == EPIPE, "EPIPE by write");
	signal(SIGPIPE, SIG_DFL);
	close(c), close(s);
	OK();
}

static void options(void)
{
	CASE("options");
	int c, s;
	pair(&c, &s);
	int v = 1;
	socklen_t l = sizeof v;
	CHECK(setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) == 0, "TCP_NODELAY");
	v = 0;
	CHECK(getsockopt(c, IPPROTO_TCP, TCP_NODELAY, &v, &l) == 0 && v == 1, "TCP_NODELAY back %d", v);
	l = sizeof v;
	CHECK(getsockopt(c, SOL_SOCKET, SO_TYPE, &v, &l) == 0 && v == SOCK_STREAM, "SO_TYPE");
	l = sizeof v;
	CHECK(getsockopt(c, SOL_SOCKET, SO_DOMAIN, &v, &l) == 0 && v == AF_INET, "SO_DOMAIN");
	struct tcp_info ti;
	l = sizeof ti;
	CHECK(getsockopt(c, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0 && ti.tcpi_state == 1, "TCP_INFO state %d", ti.tcpi_state);
	char cc[16] = { 0 };
	l = sizeof cc;
	CHECK(getsockopt(c, IPPROTO_TCP, TCP_CONGESTION, cc, &l) == 0 && cc[0], "TCP_CONGESTION");
	/* The kernel doubles the value for its bookkeeping overhead (socket(7)). */
	v = 65536;
	CHECK(setsockopt(s, SOL_SOCKET, SO_RCVBUF, &v, sizeof v) == 0, "SO_RCVBUF");
	l = sizeof v;
	CHECK(getsockopt(s, SOL_SOCKET, SO_RCVBUF, &v, &l) == 0 && v == 2 * 65536, "SO_RCVBUF back %d", v);
	/* Truncated getsockopt: the kernel writes what fits and says so. */
	char small[1];
	l = 1;
	CHECK(getsockopt(c, SOL_SOCKET, SO_TYPE, small, &l) == 0 && l == 1, "short getsockopt");
	close(c), close(s);
	OK();
}

/* SO_RCVTIMEO / SO_SNDTIMEO bound blocking recv, accept and send, as on Linux: EAGAIN
 * after the timeout (a send that moved bytes returns their count), and a zero timeout is
 * for ever again. */
static void timeouts(void)
{
	CASE("timeouts");
	int c, s;
	pair(&c, &s);
	struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 }, back;
	socklen_t l = sizeof back;
	CHECK(setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0, "SO_RCVTIMEO");
	CHECK(getsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &back, &l) == 0 && back.tv_usec == 200000,
	      "SO_RCVTIMEO back %ld", (long)back.tv_usec);
	struct timespec t0;
	char b[64];
	clock_gettime(CLOCK_MONOTONIC, &t0);
	errno = 0;
	CHECK(recv(c, b, sizeof b, 0) == -1 && errno == EAGAIN, "recv past SO_RCVTIMEO");
	long ms = ms_since(&t0);
	CHECK(ms >= 150 && ms < 5000, "recv waited %ld ms for a 200 ms timeout", ms);
	/* Data that comes in time is read. */
	CHECK(write(s, "x", 1) == 1, "write");
	CHECK(recv(c, b, sizeof b, 0) == 1, "recv within SO_RCVTIMEO");
	/* accept on a listener with a receive timeout. */
	int port, lst = listener(&port);
	CHECK(setsockopt(lst, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0, "listener SO_RCVTIMEO");
	errno = 0;
	CHECK(accept(lst, NULL, NULL) == -1 && errno == EAGAIN, "accept past SO_RCVTIMEO");
	close(lst);
	/* A send into a peer that never reads: some bytes, then EAGAIN, never a hang. */
	CHECK(setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0, "SO_SNDTIMEO");
	static char big[1 << 20];
	long sent = 0;
	int calls = 0;
	for (;;) {
		ssize_t n = send(c, big, sizeof big, 0);
		if (n < 0) {
			CHECK(errno == EAGAIN, "send past SO_SNDTIMEO");
			break;
		}
		sent += n;
		CHECK(++calls < 256, "send never timed out (%ld bytes)", sent);
	}
	CHECK(sent > 0, "nothing sent before the timeout");
	close(c), close(s);
	OK();
}

static void udp(void)
{
	CASE("udp");
	int a = socket(AF_INET, SOCK_DGRAM, 0), b = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in x = loop4(0), y;
	CHECK(bind(b, (void *)&x, sizeof x) == 0, "bind");
	socklen_t l = sizeof y;
	CHECK(getsockname(b, (void *)&y, &l) == 0, "getsockname");
	CHECK(sendto(a, "hello", 5, 0, (void *)&y, sizeof y) == 5, "sendto");
	char buf[16];
	struct sockaddr_in from;
	l = sizeof from;
	CHECK(recvfrom(b, buf, 2, MSG_TRUNC, (void *)&from, &l) == 5, "MSG_TRUNC gives the datagram length");
	CHECK(l == sizeof from && from.sin_addr.s_addr == htonl(INADDR_LOOPBACK), "source address");
	struct sockaddr_in an;
	l = sizeof an;
	CHECK(getsockname(a, (void *)&an, &l) == 0 && an.sin_port == from.sin_port, "source port");
	/* sendmsg/recvmsg with two iovecs each. */
	struct iovec iv[2] = { { "ab", 2 }, { "cde", 3 } };
	struct msghdr m = { .msg_name = &y, .msg_namelen = sizeof y, .msg_iov = iv, .msg_iovlen = 2 };
	CHECK(sendmsg(a, &m, 0) == 5, "sendmsg");
	char p1[3] = { 0 }, p2[8] = { 0 };
	struct iovec ov[2] = { { p1, 3 }, { p2, 8 } };
	struct msghdr r = { .msg_name = &from, .msg_namelen = sizeof from, .msg_iov = ov, .msg_iovlen = 2 };
	CHECK(recvmsg(b, &r, 0) == 5 && !memcmp(p1, "abc", 3) && !memcmp(p2, "de", 2), "recvmsg");
	CHECK(r.msg_namelen == sizeof from && r.msg_flags == 0, "recvmsg name/flags");
	CHECK(sendto(a, "0123456789", 10, 0, (void *)&y, sizeof y) == 10, "sendto");
	struct iovec sv = { p1, 3 };
	struct msghdr t = { .msg_iov = &sv, .msg_iovlen = 1 };
	CHECK(recvmsg(b, &t, 0) == 3 && (t.msg_flags & MSG_TRUNC), "MSG_TRUNC in msg_flags");
	CHECK(recv(b, buf, 1, MSG_DONTWAIT) == -1 && errno == EAGAIN, "empty: EAGAIN");
	close(a), close(b);
	OK();
}

/* sendmmsg/recvmmsg (glibc's resolver sends its A and AAAA queries with sendmmsg). */
static void mmsg(void)
{
	CASE("sendmmsg-recvmmsg");
	int a = socket(AF_INET, SOCK_DGRAM, 0), b = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in x = loop4(0), y;
	CHECK(bind(b, (void *)&x, sizeof x) == 0, "bind");
	socklen_t l = sizeof y;
	CHECK(getsockname(b, (void *)&y, &l) == 0, "getsockname");
	CHECK(connect(a, (void *)&y, sizeof y) == 0, "connect");
	const char *words[3] = { "one", "three", "seventeen bytes!!" };
	struct iovec iv[3];
	struct mmsghdr out[3];
	memset(out, 0, sizeof out);
	for (int i = 0; i < 3; i++) {
		iv[i].iov_base = (void *)words[i];
		iv[i].iov_len = strlen(words[i]);
		out[i].msg_hdr.msg_iov = &iv[i];
		out[i].msg_hdr.msg_iovlen = 1;
	}
	CHECK(sendmmsg(a, out, 0, 0) == 0, "an empty vector sends nothing");
	CHECK(sendmmsg(a, out, 3, 0) == 3, "three datagrams");
	CHECK(out[0].msg_len == 3 && out[1].msg_len == 5 && out[2].msg_len == 17, "msg_len of each");
	char bufs[4][32];
	struct iovec ov[4];
	struct sockaddr_in from[4];
	struct mmsghdr in[4];
	memset(in, 0, sizeof in);
	memset(bufs, 0, sizeof bufs);
	for (int i = 0; i < 4; i++) {
		ov[i].iov_base = bufs[i];
		ov[i].iov_len = sizeof bufs[i];
		in[i].msg_hdr.msg_iov = &ov[i];
		in[i].msg_hdr.msg_iovlen = 1;
		in[i].msg_hdr.msg_name = &from[i];
		in[i].msg_hdr.msg_namelen = sizeof from[i];
	}
	/* Room for four, three waiting: MSG_WAITFORONE returns the three without blocking. */
	int n = recvmmsg(b, in, 4, MSG_WAITFORONE, NULL);
	CHECK(n == 3, "recvmmsg got %d", n);
	for (int i = 0; i < 3; i++) {
		CHECK(in[i].msg_len == strlen(words[i]) && !memcmp(bufs[i], words[i], in[i].msg_len),
		      "datagram %d", i);
		CHECK(in[i].msg_hdr.msg_namelen == sizeof from[i] &&
		      from[i].sin_addr.s_addr == htonl(INADDR_LOOPBACK), "source of %d", i);
	}
	CHECK(recvmmsg(b, in, 4, MSG_DONTWAIT, NULL) == -1 && errno == EAGAIN, "empty: EAGAIN");
	/* A timeout is checked after each datagram and the time left written back. */
	CHECK(sendmmsg(a, out, 2, 0) == 2, "two more");
	struct timespec t = { .tv_sec = 5 };
	n = recvmmsg(b, in, 2, 0, &t);
	CHECK(n == 2 && t.tv_sec <= 5 && (t.tv_sec > 0 || t.tv_nsec > 0), "recvmmsg with a timeout: %d", n);
	struct timespec bad = { .tv_nsec = 1000000000 };
	CHECK(recvmmsg(b, in, 1, MSG_DONTWAIT, &bad) == -1 && errno == EINVAL, "tv_nsec out of range");
	CHECK(sendmmsg(a, NULL, 1, 0) == -1 && errno == EFAULT, "a NULL vector");
	close(a), close(b);
	OK();
}

static void vectors(void)
{
	CASE("readv-writev");
	int c, s;
	pair(&c, &s);
	struct iovec iv[3] = { { "one ", 4 }, { "two ", 4 }, { "three", 5 } };
	CHECK(writev(c, iv, 3) == 13, "writev");
	char a[5] = { 0 }, b[20] = { 0 };
	struct iovec ov[2] = { { a, 5 }, { b, 20 } };
	size_t got = 0;
	while (got < 13) {
		ssize_t n = readv(s, ov, 2);
		CHECK(n > 0, "readv");
		got += n;
		ov[0].iov_len = 0;
		ov[1].iov_base = b + (got - 5);
		ov[1].iov_len = 20 - (got - 5);
	}
	CHECK(!memcmp(a, "one t", 5) && !memcmp(b, "wo three", 8), "readv data");
	close(c), close(s);
	OK();
}

static void dups(void)
{
	CASE("dup");
	int c, s;
	pair(&c, &s);
	int d = dup(c), e = fcntl(c, F_DUPFD_CLOEXEC, 100), f = 200;
	CHECK(d >= 0 && e >= 100 && dup2(c, f) == f && dup3(c, 201, O_CLOEXEC) == 201, "dups");
	CHECK(fcntl(e, F_GETFD) & FD_CLOEXEC, "F_DUPFD_CLOEXEC sets CLOEXEC");
	close(c);
	CHECK(write(d, "1", 1) == 1 && write(e, "2", 1) == 1 && write(f, "3", 1) == 1 && write(201, "4", 1) == 1, "write through dups");
	char buf[4];
	size_t got = 0;
	while (got < 4) {
		ssize_t n = read(s, buf + got, 4 - got);
		CHECK(n > 0, "read");
		got += n;
	}
	CHECK(!memcmp(buf, "1234", 4), "order");
	close(d), close(e), close(f);
	struct pollfd p = { .fd = s, .events = POLLIN };
	CHECK(poll(&p, 1, 200) == 0, "one reference left: no EOF yet");
	/* dup2 of a host fd over the last reference closes the socket. */
	int nul = open("/dev/null", O_RDONLY);
	CHECK(dup2(nul, 201) == 201, "dup2 over");
	CHECK(read(201, buf, 1) == 0, "fd 201 is /dev/null now");
	CHECK(poll(&p, 1, 5000) == 1 && read(s, buf, 1) == 0, "EOF once the last reference is gone");
	close(nul), close(201), close(s);
	OK();
}

static void forks(const char *self)
{
	CASE("fork-exec");
	int c, s;
	pair(&c, &s);
	pid_t pid = fork();
	if (pid == 0) {
		CHECK(write(c, "child ", 6) == 6, "child write");
		_exit(0);
	}
	int st;
	waitpid(pid, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child");
	CHECK(write(c, "parent ", 7) == 7, "parent write");
	/* exec: the new image finds the inherited socket again, with the SO_RCVTIMEO set here. */
	struct timeval tv = { .tv_usec = 200000 }, none = { 0 };
	CHECK(setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0, "SO_RCVTIMEO");
	pid = fork();
	if (pid == 0) {
		char fd[16];
		snprintf(fd, sizeof fd, "%d", c);
		execl(self, self, "exec-child", fd, (char *)NULL);
		_exit(3);
	}
	waitpid(pid, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exec child status %d", st);
	CHECK(setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none) == 0, "SO_RCVTIMEO off");
	char buf[64] = { 0 };
	size_t got = 0, want = strlen("child parent exec");
	while (got < want) {
		ssize_t n = read(s, buf + got, sizeof buf - 1 - got);
		CHECK(n > 0, "read");
		got += n;
	}
	CHECK(!strcmp(buf, "child parent exec"), "data %s", buf);
	close(c), close(s);
	OK();
}

static void readiness(void)
{
	CASE("readiness");
	int c, s, c2, s2, pp[2];
	pair(&c, &s);
	pair(&c2, &s2);
	CHECK(pipe(pp) == 0, "pipe");
	struct timespec t0;
	/* poll: nothing ready waits for the timeout. */
	struct pollfd p[2] = { { .fd = s, .events = POLLIN }, { .fd = pp[0], .events = POLLIN } };
	clock_gettime(CLOCK_MONOTONIC, &t0);
	CHECK(poll(p, 2, 150) == 0 && ms_since(&t0) >= 140, "poll timeout");
	/* A host fd wakes a mixed poll; then an offloaded one does. */
	CHECK(write(pp[1], "x", 1) == 1, "pipe write");
	CHECK(poll(p, 2, 5000) == 1 && p[1].revents == POLLIN && p[0].revents == 0, "host fd ready");
	char b;
	read(pp[0], &b, 1);
	if (fork() == 0) {
		usleep(100000);
		write(c, "y", 1);
		_exit(0);
	}
	CHECK(poll(p, 2, 5000) == 1 && p[0].revents == POLLIN, "socket wakes a sleeping poll");
	wait(NULL);
	/* select on the same mix. */
	fd_set r;
	FD_ZERO(&r);
	FD_SET(s, &r);
	FD_SET(pp[0], &r);
	struct timeval tv = { 1, 0 };
	CHECK(select((s > pp[0] ? s : pp[0]) + 1, &r, NULL, NULL, &tv) == 1 && FD_ISSET(s, &r) && !FD_ISSET(pp[0], &r), "select");
	read(s, &b, 1);
	/* epoll, level-triggered: stays ready until read. */
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 1111 };
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev) == 0, "epoll add");
	ev.data.u64 = 2222;
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, pp[0], &ev) == 0, "epoll add pipe");
	ev.events = EPOLLIN | EPOLLET;
	ev.data.u64 = 3333;
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, s2, &ev) == 0, "epoll add ET");
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, s2, &ev) == -1 && errno == EEXIST, "EEXIST");
	struct epoll_event out[4];
	CHECK(epoll_wait(ep, out, 4, 100) == 0, "nothing ready");
	write(c, "ab", 2);
	CHECK(epoll_wait(ep, out, 4, 5000) == 1 && out[0].data.u64 == 1111 && out[0].events == EPOLLIN, "LT event");
	CHECK(epoll_wait(ep, out, 4, 5000) == 1 && out[0].data.u64 == 1111, "LT again while unread");
	char two[2];
	CHECK(read(s, two, 2) == 2, "read");
	CHECK(epoll_wait(ep, out, 4, 100) == 0, "LT quiet after read");
	/* Edge-triggered: an event per arrival; after draining to EAGAIN, quiet until new data. */
	fcntl(s2, F_SETFL, O_NONBLOCK);
	write(c2, "e", 1);
	CHECK(epoll_wait(ep, out, 4, 5000) == 1 && out[0].data.u64 == 3333, "ET event");
	while (read(s2, &b, 1) == 1)
		;
	CHECK(errno == EAGAIN, "drained");
	CHECK(epoll_wait(ep, out, 4, 100) == 0, "ET quiet after drain");
	write(c2, "f", 1);
	CHECK(epoll_wait(ep, out, 4, 5000) == 1 && out[0].data.u64 == 3333, "ET new edge");
	/* EPOLLOUT and the peer's close: RDHUP/HUP. */
	ev.events = EPOLLOUT;
	ev.data.u64 = 4444;
	CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev) == 0, "mod");
	int n = epoll_wait(ep, out, 4, 5000), found = 0;
	CHECK(n >= 1, "EPOLLOUT");
	for (int i = 0; i < n; i++)
		found |= out[i].data.u64 == 4444 && (out[i].events & EPOLLOUT);
	CHECK(found, "EPOLLOUT event (%d events, first %llu %x)", n, (unsigned long long)out[0].data.u64, out[0].events);
	CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, s, NULL) == 0, "del");
	close(c);
	p[0].events = POLLIN | POLLRDHUP;
	CHECK(poll(p, 1, 5000) == 1 && (p[0].revents & POLLRDHUP), "RDHUP revents %x", p[0].revents);
	/* A nested epoll set (not intercepted as such) still wakes. */
	int outer = epoll_create1(0);
	ev.events = EPOLLIN;
	ev.data.u64 = 5;
	CHECK(epoll_ctl(outer, EPOLL_CTL_ADD, ep, &ev) == 0, "nest");
	while (read(s2, &b, 1) == 1)
		;
	write(c2, "g", 1);
	CHECK(epoll_wait(outer, out, 4, 5000) == 1 && out[0].data.u64 == 5, "outer set wakes");
	CHECK(epoll_wait(ep, out, 4, 0) == 1 && out[0].data.u64 == 3333, "inner set has the event");
	close(outer), close(ep), close(s), close(c2), close(s2), close(pp[0]), close(pp[1]);
	OK();
}

static volatile sig_atomic_t usr1;
static void on_usr1(int sig)
{
	(void)sig;
	usr1++;
}

static void on_usr1_with(int flags)
{
	struct sigaction sa = { .sa_handler = on_usr1, .sa_flags = flags };
	sigemptyset(&sa.sa_mask);
	CHECK(sigaction(SIGUSR1, &sa, NULL) == 0, "sigaction");
	usr1 = 0;
}

/* A child that sends this process SIGUSR1 every 50 ms, `count` times (-1: until killed),
 * then writes `data` on `fd` (when not NULL) or connects to `port` (when not 0). Several
 * signals, so that one lands while the call under test blocks even on a loaded machine. */
static pid_t signaller(int count, int fd, const char *data, int port)
{
	pid_t parent = getpid(), pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		for (int i = 0; count < 0 || i < count; i++) {
			usleep(50000);
			if (kill(parent, SIGUSR1) != 0)
				_exit(0);
		}
		usleep(100000);
		if (data)
			write(fd, data, strlen(data));
		if (port) {
			int c = socket(AF_INET, SOCK_STREAM, 0);
			struct sockaddr_in a = loop4(port);
			connect(c, (void *)&a, sizeof a);
			usleep(500000);
		}
		_exit(0);
	}
	return pid;
}

static void reap(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* signal(7)'s rule for socket calls: a handler without SA_RESTART ends a blocking call with
 * EINTR; with SA_RESTART the call goes on, unless the socket has a timeout or bytes have
 * moved; poll is never restarted. */
static void signals(void)
{
	CASE("signals");
	int c, s;
	char b[8];
	pair(&c, &s);
	on_usr1_with(0);
	pid_t k = signaller(-1, -1, NULL, 0);
	errno = 0;
	CHECK(recv(s, b, sizeof b, 0) == -1 && errno == EINTR && usr1 >= 1, "recv EINTR (%d signals)", usr1);
	reap(k);

	on_usr1_with(SA_RESTART);
	k = signaller(6, c, "z", 0);
	CHECK(recv(s, b, sizeof b, 0) == 1 && b[0] == 'z', "recv restarted");
	CHECK(usr1 == 6, "%d of 6 signals handled", usr1);
	reap(k);
	int port, lst = listener(&port);
	on_usr1_with(SA_RESTART);
	k = signaller(6, -1, NULL, port);
	int a = accept(lst, NULL, NULL);
	CHECK(a >= 0 && usr1 == 6, "accept restarted (%d signals)", usr1);
	close(a);
	close(lst);
	reap(k);

	/* Bytes already moved: MSG_WAITALL returns them, restart or not. */
	CHECK(write(c, "ab", 2) == 2, "write");
	k = signaller(-1, -1, NULL, 0);
	CHECK(recv(s, b, 4, MSG_WAITALL) == 2 && !memcmp(b, "ab", 2), "a partial MSG_WAITALL");
	reap(k);
	/* A socket timeout: EINTR even with SA_RESTART. */
	struct timeval tv = { .tv_sec = 30 };
	CHECK(setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0, "SO_RCVTIMEO");
	k = signaller(-1, -1, NULL, 0);
	errno = 0;
	CHECK(recv(s, b, sizeof b, 0) == -1 && errno == EINTR, "recv with a timeout: EINTR");
	reap(k);
	/* poll: never restarted. */
	struct pollfd p = { .fd = s, .events = POLLIN };
	k = signaller(-1, -1, NULL, 0);
	errno = 0;
	CHECK(poll(&p, 1, 30000) == -1 && errno == EINTR, "poll: EINTR");
	reap(k);
	signal(SIGUSR1, SIG_DFL);
	close(c), close(s);
	OK();
}

/* SO_TIMESTAMPING: the library kernel's TX reports (SCHED, SND, ACK) reach the program on
 * its error queue, with POLLERR while one waits, OPT_ID keys and times on the program's own
 * CLOCK_REALTIME. */
static void timestamping(void)
{
	CASE("timestamping");
	int c, s;
	pair(&c, &s);
	int flags = SOF_TIMESTAMPING_TX_SCHED | SOF_TIMESTAMPING_TX_SOFTWARE |
		    SOF_TIMESTAMPING_TX_ACK | SOF_TIMESTAMPING_SOFTWARE |
		    SOF_TIMESTAMPING_OPT_ID | SOF_TIMESTAMPING_OPT_TSONLY;
	CHECK(setsockopt(c, SOL_SOCKET, SO_TIMESTAMPING, &flags, sizeof flags) == 0, "SO_TIMESTAMPING");
	struct timespec before, after;
	clock_gettime(CLOCK_REALTIME, &before);
	static char data[1000];
	CHECK(send(c, data, sizeof data, 0) == (ssize_t)sizeof data, "send");
	char b[2000];
	size_t got = 0;
	while (got < sizeof data) {
		ssize_t n = recv(s, b, sizeof b, 0);
		CHECK(n > 0, "recv");
		got += n;
	}
	int seen = 0;
	for (int i = 0; i < 3; i++) {
		struct pollfd p = { .fd = c, .events = 0 };
		CHECK(poll(&p, 1, 5000) == 1 && (p.revents & POLLERR), "POLLERR for report %d (revents %x)", i, p.revents);
		char ctl[512];
		struct msghdr m = { .msg_control = ctl, .msg_controllen = sizeof ctl };
		CHECK(recvmsg(c, &m, MSG_ERRQUEUE) == 0, "recvmsg MSG_ERRQUEUE");
		CHECK(m.msg_flags & MSG_ERRQUEUE, "msg_flags %x", m.msg_flags);
		struct scm_timestamping *ts = NULL;
		struct sock_extended_err *ee = NULL;
		for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h)) {
			if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_TIMESTAMPING)
				ts = (void *)CMSG_DATA(h);
			if (h->cmsg_level == SOL_IP && h->cmsg_type == IP_RECVERR)
				ee = (void *)CMSG_DATA(h);
		}
		CHECK(ts && ee, "SCM_TIMESTAMPING and IP_RECVERR");
		CHECK(ee->ee_errno == ENOMSG && ee->ee_origin == SO_EE_ORIGIN_TIMESTAMPING,
		      "errno %u origin %u", ee->ee_errno, ee->ee_origin);
		CHECK(ee->ee_data == sizeof data - 1, "OPT_ID key %u", ee->ee_data);
		CHECK(ee->ee_info <= SCM_TSTAMP_ACK, "report type %u", ee->ee_info);
		seen |= 1 << ee->ee_info;
		clock_gettime(CLOCK_REALTIME, &after);
		CHECK(ts->ts[0].tv_sec >= before.tv_sec - 1 && ts->ts[0].tv_sec <= after.tv_sec + 1,
		      "a time of %ld s, the program's clock %ld..%ld s", (long)ts->ts[0].tv_sec,
		      (long)before.tv_sec, (long)after.tv_sec);
	}
	CHECK(seen == (1 << SCM_TSTAMP_SND | 1 << SCM_TSTAMP_SCHED | 1 << SCM_TSTAMP_ACK),
	      "SCHED, SND and ACK (seen %x)", seen);
	char ctl[512];
	struct msghdr m = { .msg_control = ctl, .msg_controllen = sizeof ctl };
	errno = 0;
	CHECK(recvmsg(c, &m, MSG_ERRQUEUE | MSG_DONTWAIT) == -1 && errno == EAGAIN, "the queue is empty");
	struct pollfd p = { .fd = c, .events = 0 };
	CHECK(poll(&p, 1, 0) == 0, "no POLLERR once read (revents %x)", p.revents);
	close(c), close(s);
	OK();
}

/* Interface ioctls on an offloaded socket are the library kernel's: its lo is up (the
 * namespace's is down), its errno for an unknown name, its SIOCGIFCONF list. */
static void interfaces(void)
{
	CASE("interfaces");
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	CHECK(s >= 0, "socket");
	struct ifreq r = { 0 };
	strcpy(r.ifr_name, "lo");
	CHECK(ioctl(s, SIOCGIFINDEX, &r) == 0 && r.ifr_ifindex == 1, "SIOCGIFINDEX lo: %d", r.ifr_ifindex);
	CHECK(ioctl(s, SIOCGIFFLAGS, &r) == 0 && (r.ifr_flags & IFF_UP) && (r.ifr_flags & IFF_LOOPBACK),
	      "the library's lo is up (flags %x)", r.ifr_flags);
	CHECK(ioctl(s, SIOCGIFADDR, &r) == 0 &&
		      ((struct sockaddr_in *)&r.ifr_addr)->sin_addr.s_addr == htonl(INADDR_LOOPBACK),
	      "lo's address");
	CHECK(ioctl(s, SIOCGIFMTU, &r) == 0 && r.ifr_mtu == 65536, "lo's MTU %d", r.ifr_mtu);
	memset(&r, 0, sizeof r);
	r.ifr_ifindex = 1;
	CHECK(ioctl(s, SIOCGIFNAME, &r) == 0 && !strcmp(r.ifr_name, "lo"), "SIOCGIFNAME 1: %s", r.ifr_name);
	strcpy(r.ifr_name, "nosuch0");
	errno = 0;
	CHECK(ioctl(s, SIOCGIFINDEX, &r) == -1 && errno == ENODEV, "an unknown interface");
	/* SIOCGIFCONF: the size first (a null buffer), then the entries: the library's lo with
	 * 127.0.0.1 (the namespace's lo is down, so it has no IPv4 address at all). */
	struct ifconf conf = { 0 };
	CHECK(ioctl(s, SIOCGIFCONF, &conf) == 0 && conf.ifc_len >= (int)sizeof(struct ifreq) &&
		      conf.ifc_len % sizeof(struct ifreq) == 0,
	      "SIOCGIFCONF size %d", conf.ifc_len);
	struct ifreq all[16];
	int need = conf.ifc_len;
	conf.ifc_len = sizeof all;
	conf.ifc_req = all;
	CHECK(ioctl(s, SIOCGIFCONF, &conf) == 0 && conf.ifc_len == need, "SIOCGIFCONF %d of %d", conf.ifc_len, need);
	int lo = 0;
	for (int i = 0; i < conf.ifc_len / (int)sizeof(struct ifreq); i++)
		lo |= !strcmp(all[i].ifr_name, "lo") &&
		      ((struct sockaddr_in *)&all[i].ifr_addr)->sin_addr.s_addr == htonl(INADDR_LOOPBACK);
	CHECK(lo, "lo with 127.0.0.1 among %d entries", conf.ifc_len / (int)sizeof(struct ifreq));
	/* Room for one entry: one entry, as the kernel fills it. */
	conf.ifc_len = sizeof(struct ifreq);
	CHECK(ioctl(s, SIOCGIFCONF, &conf) == 0 && conf.ifc_len == sizeof(struct ifreq), "one entry");
	close(s);
	OK();
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc == 3 && !strcmp(argv[1], "exec-child")) {
		int fd = atoi(argv[2]);
		CASE("exec-child");
		int t = 0;
		socklen_t l = sizeof t;
		CHECK(getsockopt(fd, SOL_SOCKET, SO_TYPE, &t, &l) == 0 && t == SOCK_STREAM, "inherited socket");
		CHECK(write(fd, "exec", 4) == 4, "write");
		/* The timeout the parent set bounds this image's blocking recv too. */
		alarm(20);
		struct timespec t0;
		char b;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		errno = 0;
		CHECK(recv(fd, &b, 1, 0) == -1 && errno == EAGAIN, "recv past the inherited SO_RCVTIMEO");
		long ms = ms_since(&t0);
		CHECK(ms >= 150 && ms < 10000, "waited %ld ms for a 200 ms timeout", ms);
		return 0;
	}
	/* A case that hangs (a wait that never ends) fails the run instead of stalling it. */
	alarm(120);
	errors();
	nonblocking_connect();
	partial_io();
	options();
	timeouts();
	udp();
	mmsg();
	vectors();
	dups();
	forks(argv[0]);
	readiness();
	signals();
	timestamping();
	interfaces();
	printf("all passed\n");
	return 0;
}
