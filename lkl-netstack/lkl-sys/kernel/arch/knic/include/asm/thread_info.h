/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Every task runs on a host thread. thread_info is not in the task (no
 * THREAD_INFO_IN_TASK): the "stack" the core allocates is just this struct, slab
 * backed (THREAD_SIZE < PAGE_SIZE); the real stack is the host thread's.
 */
#ifndef _ASM_KNIC_THREAD_INFO_H
#define _ASM_KNIC_THREAD_INFO_H

#define THREAD_SIZE_ORDER	0
#define THREAD_SIZE		1024

#ifndef __ASSEMBLY__
#include <asm/ptrace.h>

struct task_struct;
struct knic_jmp_buf;
struct knic_kthread_frame;

struct thread_info {
	struct task_struct *task;
	unsigned long flags;
	int preempt_count;
	/* The host semaphore this task's thread sleeps on while another task runs. */
	void *sched_sem;
	/* Who switched to this task last: what __switch_to() returns on resumption. */
	struct task_struct *prev_sched;
	/*
	 * Where this task's host thread unwinds to when it stops running the task:
	 * for a host task, the entry of the current knic_syscall() (parking, exit, halt);
	 * for a kernel thread, the bottom of its host thread (exit, halt).
	 */
	struct knic_jmp_buf *unwind_jb;
	/* Kernel threads: the host-memory frame of their host thread. */
	struct knic_kthread_frame *kthread_frame;
	/* Scratch registers for generic code that wants a pt_regs of the task. */
	struct pt_regs regs;
};

#define INIT_THREAD_INFO(tsk)			\
{						\
	.task		= &tsk,			\
	.flags		= 0,			\
	.preempt_count	= INIT_PREEMPT_COUNT,	\
}

extern struct thread_info *knic_current_ti;

static inline struct thread_info *current_thread_info(void)
{
	return knic_current_ti;
}

#endif /* __ASSEMBLY__ */

#define TIF_SYSCALL_TRACE	0
#define TIF_NOTIFY_RESUME	1
#define TIF_SIGPENDING		2
#define TIF_NEED_RESCHED	3
#define TIF_RESTORE_SIGMASK	4
#define TIF_MEMDIE		5
#define TIF_NOTIFY_SIGNAL	6
#define TIF_POLLING_NRFLAG	7
/* A task bound to an external host thread that calls knic_syscall(). */
#define TIF_KNIC_HOST		8
/* The host task is leaving the CPU to return to its caller (see syscall.c). */
#define TIF_KNIC_PARKING	9

#define _TIF_SYSCALL_TRACE	(1 << TIF_SYSCALL_TRACE)
#define _TIF_NOTIFY_RESUME	(1 << TIF_NOTIFY_RESUME)
#define _TIF_SIGPENDING		(1 << TIF_SIGPENDING)
#define _TIF_NEED_RESCHED	(1 << TIF_NEED_RESCHED)
#define _TIF_NOTIFY_SIGNAL	(1 << TIF_NOTIFY_SIGNAL)
#define _TIF_POLLING_NRFLAG	(1 << TIF_POLLING_NRFLAG)
#define _TIF_KNIC_HOST		(1 << TIF_KNIC_HOST)
#define _TIF_KNIC_PARKING	(1 << TIF_KNIC_PARKING)

#endif
