// SPDX-License-Identifier: GPL-2.0
/*
 * The one host operation that cannot be written in Rust: a saved return point.
 * jmp_buf_set() and everything between it and jmp_buf_longjmp() are C frames
 * (this file and the kernel), so unwinding never skips a Rust frame.
 */
#include <setjmp.h>
#include <asm/host_ops.h>

_Static_assert(sizeof(jmp_buf) <= sizeof(struct knic_jmp_buf), "knic_jmp_buf too small");

void knic_host_jmp_buf_set(struct knic_jmp_buf *jb, void (*fn)(void *), void *arg)
{
	if (!setjmp(*(jmp_buf *)jb))
		fn(arg);
}

void knic_host_jmp_buf_longjmp(struct knic_jmp_buf *jb)
{
	longjmp(*(jmp_buf *)jb, 1);
}
