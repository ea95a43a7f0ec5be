/* SPDX-License-Identifier: GPL-2.0 */
/*
 * One CPU, but host threads (device models, the timer) share memory with the
 * kernel: virtio rings need real fences, not just compiler barriers.
 */
#ifndef _ASM_KNIC_BARRIER_H
#define _ASM_KNIC_BARRIER_H

#define mb()	__atomic_thread_fence(__ATOMIC_SEQ_CST)
#define rmb()	__atomic_thread_fence(__ATOMIC_ACQUIRE)
#define wmb()	__atomic_thread_fence(__ATOMIC_RELEASE)

#include <asm-generic/barrier.h>
#endif
