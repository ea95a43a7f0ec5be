/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * The contract between the kernel library and the program that embeds it.
 *
 * The embedder fills struct knic_host_ops and passes it to knic_start_kernel(). Every
 * operation may be called from any host thread, must not unwind, and must not call
 * back into the kernel (knic_syscall() and friends): the calling thread may be the
 * one running kernel code.
 */
#ifndef _UAPI_ASM_KNIC_HOST_OPS_H
#define _UAPI_ASM_KNIC_HOST_OPS_H

/* Room for the host C library's jmp_buf (glibc: 200 bytes on x86-64, 312 on arm64). */
struct knic_jmp_buf {
	unsigned long long buf[64];
} __attribute__((aligned(16)));

/* One piece of an AES-GCM message: len bytes at src, the result to dst. */
struct knic_crypt_seg {
	const unsigned char *src;
	unsigned char *dst;
	unsigned long len;
};

struct knic_host_ops {
	/* Console output of the kernel log (one or more whole lines). */
	void (*print)(const char *str, int len);
	/* The kernel panicked; the host should stop the process. */
	void (*panic)(void);

	/* Counting semaphores: the hand-over between tasks is built on them. */
	void *(*sem_alloc)(int count);
	void (*sem_free)(void *sem);
	void (*sem_up)(void *sem);
	void (*sem_down)(void *sem);

	/* A detached host thread running fn(arg); returns 0 on failure. */
	unsigned long (*thread_create)(void (*fn)(void *), void *arg);

	/* Thread-local keys; the destructor runs at host thread exit for non-NULL values. */
	long (*tls_alloc)(void (*destructor)(void *));
	void (*tls_free)(long key);
	int (*tls_set)(long key, void *data);
	void *(*tls_get)(long key);

	/* Host memory for bookkeeping that outlives a task, and the kernel's RAM arena. */
	void *(*mem_alloc)(unsigned long size);
	void (*mem_free)(void *addr);
	void *(*page_alloc)(unsigned long size);
	void (*page_free)(void *addr, unsigned long size);

	/* Monotonic nanoseconds. */
	unsigned long long (*time_ns)(void);
	/* One-shot timer calling fn(arg) on a host thread; delta 0 disarms it. */
	void *(*timer_alloc)(void (*fn)(void *), void *arg);
	int (*timer_set_oneshot)(void *timer, unsigned long long delta_ns);
	void (*timer_free)(void *timer);

	/*
	 * Run fn(arg) with a return point saved in jb: jmp_buf_set() returns when fn
	 * returns or when jmp_buf_longjmp(jb) is called from below fn. Only C frames
	 * (kernel and host shim) may lie between the two.
	 */
	void (*jmp_buf_set)(struct knic_jmp_buf *jb, void (*fn)(void *), void *arg);
	void (*jmp_buf_longjmp)(struct knic_jmp_buf *jb) __attribute__((noreturn));

	/*
	 * Device registers: readb/w/l/q and writeb/w/l/q of an address the host
	 * registered as MMIO (on the kernel command line as virtio_mmio.device=...)
	 * come here, on the thread that runs kernel code. Returns 0 or -errno.
	 */
	int (*iomem_access)(const volatile void *addr, void *val, int size, int write);

	/*
	 * Optional: the host C library's (vectorised) string routines. Every byte the
	 * stack copies between sockets and host buffers goes through memcpy.
	 */
	void *(*memcpy)(void *dest, const void *src, unsigned long n);
	void *(*memmove)(void *dest, const void *src, unsigned long n);
	void *(*memset)(void *s, int c, unsigned long n);

	/*
	 * Optional, all three or none: AES-GCM with a 12-byte IV and a 16-byte tag
	 * in host code (AES-NI, a crypto engine). With them, the kernel's
	 * "gcm(aes)" for 128- and 256-bit keys (kernel TLS, IPsec) runs there
	 * instead of the generic C code.
	 *
	 * aes_gcm_key_new expands a key of key_len bytes once and returns a handle,
	 * or NULL for a key length it does not take or when out of memory; the
	 * caller keeps no use for its own copy. aes_gcm_key_free wipes the handle's
	 * key material and releases it, once per handle, after its last crypt.
	 * A handle is read-only to aes_gcm_crypt, so any threads may use it at once.
	 *
	 * aes_gcm_crypt seals (encrypt) or opens one message described by segs:
	 * the first aad_segs entries are the AAD (src only, dst unused), the next
	 * data_segs the data, each read from src and its result written to dst.
	 * Within one entry dst is src (in place) or does not overlap any source.
	 * Encrypting writes the tag; decrypting checks it and returns -EBADMSG if
	 * it does not match (dst then holds no plaintext anyone may use). Returns 0
	 * or a negative errno (-EINVAL: over GCM's length limit). Never sleeps, no
	 * allocation; the segments are kernel memory, valid for the call.
	 */
	void *(*aes_gcm_key_new)(const unsigned char *key, unsigned int key_len);
	void (*aes_gcm_key_free)(void *key);
	int (*aes_gcm_crypt)(const void *key, int encrypt, const unsigned char *iv,
			     const struct knic_crypt_seg *segs,
			     unsigned int aad_segs, unsigned int data_segs,
			     unsigned char *tag);
};

/* Library entry points: the only global symbols of the kernel archive. */
int knic_start_kernel(const struct knic_host_ops *ops, unsigned long mem_bytes,
		      const char *cmdline);
long knic_syscall(long nr, const long *params);
long knic_halt(void);
int knic_is_running(void);
int knic_get_free_irq(const char *name);
void knic_put_irq(int irq);
int knic_trigger_irq(int irq);

#endif
