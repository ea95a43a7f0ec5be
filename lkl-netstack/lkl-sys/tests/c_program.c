// SPDX-License-Identifier: GPL-2.0
/*
 * A C program that links the kernel library next to libc: it provides POSIX host
 * operations of its own, boots, calls getpid() and socket() through the library,
 * and halts. Proves the archive's symbols never clash with libc's.
 */
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h> /* libc's headers and the library's side by side */
#include <knic/host_ops.h>
#include <knic/syscalls.h>
#include <knic/uapi/linux/tls.h>
#include <knic/uapi/linux/netlink.h>

extern void knic_host_jmp_buf_set(struct knic_jmp_buf *, void (*)(void *), void *);
extern void knic_host_jmp_buf_longjmp(struct knic_jmp_buf *) __attribute__((noreturn));

static void print(const char *s, int len) { fwrite(s, 1, len, stderr); }
static void panic_(void) { abort(); }
static void *sem_alloc(int count)
{
	sem_t *s = malloc(sizeof(*s));
	if (s)
		sem_init(s, 0, count);
	return s;
}
static void sem_free(void *s) { sem_destroy(s); free(s); }
static void sem_up(void *s) { sem_post(s); }
static void sem_down(void *s) { while (sem_wait(s)) ; }

struct start { void (*fn)(void *); void *arg; };
static void *thread_main(void *p)
{
	struct start st = *(struct start *)p;
	free(p);
	st.fn(st.arg);
	return NULL;
}
static unsigned long thread_create(void (*fn)(void *), void *arg)
{
	pthread_t t;
	struct start *st = malloc(sizeof(*st));
	if (!st)
		return 0;
	st->fn = fn;
	st->arg = arg;
	if (pthread_create(&t, NULL, thread_main, st)) {
		free(st);
		return 0;
	}
	pthread_detach(t);
	return 1;
}
static long tls_alloc(void (*d)(void *))
{
	pthread_key_t k;
	return pthread_key_create(&k, d) ? -1 : (long)k;
}
static void tls_free(long k) { pthread_key_delete(k); }
static int tls_set(long k, void *v) { return pthread_setspecific(k, v); }
static void *tls_get(long k) { return pthread_getspecific(k); }
static void *mem_alloc(unsigned long n) { return malloc(n); }
static void *page_alloc(unsigned long n)
{
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}
static void page_free(void *p, unsigned long n) { munmap(p, n); }
static unsigned long long time_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* The one-shot timer: a thread waiting on a condition variable with a deadline. */
struct timer {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned long long deadline; /* 0: disarmed */
	int stop;
	void (*fn)(void *);
	void *arg;
	pthread_t thread;
};
static void *timer_main(void *p)
{
	struct timer *t = p;
	pthread_mutex_lock(&t->lock);
	while (!t->stop) {
		if (!t->deadline) {
			pthread_cond_wait(&t->cond, &t->lock);
		} else if (time_ns() >= t->deadline) {
			t->deadline = 0;
			pthread_mutex_unlock(&t->lock);
			t->fn(t->arg);
			pthread_mutex_lock(&t->lock);
		} else {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			unsigned long long wait = t->deadline - time_ns();
			ts.tv_sec += wait / 1000000000ULL;
			ts.tv_nsec += wait % 1000000000ULL;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&t->cond, &t->lock, &ts);
		}
	}
	pthread_mutex_unlock(&t->lock);
	return NULL;
}
static void *timer_alloc(void (*fn)(void *), void *arg)
{
	struct timer *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cond, NULL);
	t->fn = fn;
	t->arg = arg;
	if (pthread_create(&t->thread, NULL, timer_main, t)) {
		free(t);
		return NULL;
	}
	return t;
}
static int timer_set_oneshot(void *p, unsigned long long delta)
{
	struct timer *t = p;
	pthread_mutex_lock(&t->lock);
	t->deadline = delta ? time_ns() + delta : 0;
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->lock);
	return 0;
}
static void timer_free(void *p)
{
	struct timer *t = p;
	pthread_mutex_lock(&t->lock);
	t->stop = 1;
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->lock);
	pthread_join(t->thread, NULL);
	free(t);
}

static const struct knic_host_ops ops = {
	.print = print, .panic = panic_,
	.sem_alloc = sem_alloc, .sem_free = sem_free, .sem_up = sem_up, .sem_down = sem_down,
	.thread_create = thread_create,
	.tls_alloc = tls_alloc, .tls_free = tls_free, .tls_set = tls_set, .tls_get = tls_get,
	.mem_alloc = mem_alloc, .mem_free = free, .page_alloc = page_alloc, .page_free = page_free,
	.time_ns = time_ns, .timer_alloc = timer_alloc, .timer_set_oneshot = timer_set_oneshot,
	.timer_free = timer_free,
	.jmp_buf_set = knic_host_jmp_buf_set, .jmp_buf_longjmp = knic_host_jmp_buf_longjmp,
	.memcpy = (void *(*)(void *, const void *, unsigned long))memcpy,
};

int main(void)
{
	long args[6] = { 2 /* AF_INET */, 1 /* SOCK_STREAM */, 0 };
	long pid, fd;
	int rc = knic_start_kernel(&ops, 64UL << 20, "quiet");

	if (rc) {
		fprintf(stderr, "boot failed: %d\n", rc);
		return 1;
	}
	pid = knic_syscall(KNIC__NR_getpid, NULL);
	fd = knic_syscall(KNIC__NR_socket, args);
	printf("library pid %ld, host pid %d, socket fd %ld\n", pid, (int)getpid(), fd);
	if (pid != 1 || fd < 0)
		return 1;
	/* The library's UAPI is this kernel's: TLS and netlink constants from it. */
	printf("TLS_CIPHER_AES_GCM_256=%d NETLINK_ROUTE=%d IPPROTO_TCP=%d\n",
	       TLS_CIPHER_AES_GCM_256, NETLINK_ROUTE, IPPROTO_TCP);
	if (knic_halt() || knic_is_running())
		return 1;
	puts("c_program: ok");
	return 0;
}
