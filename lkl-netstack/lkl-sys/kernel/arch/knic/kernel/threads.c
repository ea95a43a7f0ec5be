// SPDX-License-Identifier: GPL-2.0
/*
 * Tasks and context switches.
 *
 * Each task runs on its own host thread, and only the current task's thread runs
 * kernel code: that is the whole "CPU". __switch_to() hands the CPU over by posting
 * next's semaphore and then sleeping on prev's, so exactly one thread is awake in
 * the kernel at any time and the semaphores give the memory ordering.
 *
 * Kernel threads get a host thread of their own (created in copy_thread(), parked
 * until first switched to). Host tasks are bound to an external thread that calls
 * knic_syscall() (syscall.c): they leave the CPU between syscalls by unwinding to
 * the syscall entry instead of sleeping.
 */
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/sched/task_stack.h>
#include <linux/sched/signal.h>
#include <linux/sched/debug.h>
#include <linux/slab.h>
#include <asm/host_ops.h>
#include <asm/switch_to.h>
#include <asm/knic.h>

struct thread_info *knic_current_ti = &init_thread_info;

struct knic_kthread_frame *knic_kthread_frame_alloc(struct thread_info *ti)
{
	struct knic_kthread_frame *frame = knic_host->mem_alloc(sizeof(*frame));

	if (!frame)
		return NULL;
	memset(frame, 0, sizeof(*frame));
	frame->ti = ti;
	frame->sched_sem = ti->sched_sem;
	return frame;
}

void knic_kthread_frame_release(struct knic_kthread_frame *frame)
{
	knic_host->mem_free(frame);
}

void knic_kthread_set_unwind(struct thread_info *ti)
{
	ti->unwind_jb = &ti->kthread_frame->unwind_jb;
}

/* Runs on the new host thread, under the frame's unwind point. */
static void knic_kthread_run(void *arg)
{
	struct knic_kthread_frame *frame = arg;
	struct thread_info *ti;
	int (*fn)(void *);
	void *fn_arg;

	knic_host->sem_down(frame->sched_sem);
	if (READ_ONCE(frame->aborted))
		return; /* the task was freed before it ever ran */
	if (READ_ONCE(knic_halting))
		return;

	/* We own the CPU from here on. */
	ti = frame->ti;
	schedule_tail(ti->prev_sched);
	fn = ti->task->thread.fn;
	fn_arg = ti->task->thread.fn_arg;
	if (fn(fn_arg) == 0 && is_global_init(current))
		knic_init_main(); /* PID 1 "executed" the library's init (init.c) */
	do_exit(0);
}

static void knic_kthread_entry(void *arg)
{
	struct knic_kthread_frame *frame = arg;

	knic_host->jmp_buf_set(&frame->unwind_jb, knic_kthread_run, frame);
	/*
	 * The task died, the kernel halted, or the task never ran: either way no
	 * task will ever be switched to on this semaphore again.
	 */
	knic_host->sem_free(frame->sched_sem);
	knic_kthread_frame_release(frame);
	knic_kthread_gone();
}

int copy_thread(struct task_struct *p, const struct kernel_clone_args *args)
{
	struct thread_info *ti = task_thread_info(p);
	struct knic_kthread_frame *frame;

	/* setup_thread_stack() copied the parent's thread_info: start clean. */
	ti->sched_sem = NULL;
	ti->prev_sched = NULL;
	ti->unwind_jb = NULL;
	ti->kthread_frame = NULL;
	ti->flags &= ~(_TIF_KNIC_HOST | _TIF_KNIC_PARKING);
	memset(&ti->regs, 0, sizeof(ti->regs));

	if (!args->fn)
		return -EINVAL; /* no user mode: every task starts in a kernel function */
	p->thread.fn = args->fn;
	p->thread.fn_arg = args->fn_arg;

	if (args->fn == knic_host_task_fn) {
		/* Bound to the host thread that asked for it (syscall.c). */
		set_ti_thread_flag(ti, TIF_KNIC_HOST);
		return knic_host_task_bind(p, args->fn_arg);
	}

	ti->sched_sem = knic_host->sem_alloc(0);
	if (!ti->sched_sem)
		return -ENOMEM;
	frame = knic_kthread_frame_alloc(ti);
	if (!frame)
		goto free_sem;
	ti->kthread_frame = frame;
	ti->unwind_jb = &frame->unwind_jb;
	knic_kthread_started();
	if (!knic_host->thread_create(knic_kthread_entry, frame)) {
		knic_kthread_gone();
		goto free_frame;
	}
	return 0;

free_frame:
	knic_kthread_frame_release(frame);
	ti->kthread_frame = NULL;
free_sem:
	knic_host->sem_free(ti->sched_sem);
	ti->sched_sem = NULL;
	return -ENOMEM;
}

/*
 * Called for the current task on exit (nothing to do: its host thread unwinds in
 * __switch_to) and by fork's error path for a child that never ran: that child's
 * host thread is still waiting for its first switch and is told to go away.
 */
void exit_thread(struct task_struct *tsk)
{
	struct thread_info *ti = task_thread_info(tsk);
	struct knic_kthread_frame *frame = ti->kthread_frame;

	if (tsk == current || test_ti_thread_flag(ti, TIF_KNIC_HOST) || !frame)
		return;
	WRITE_ONCE(frame->aborted, 1);
	knic_host->sem_up(frame->sched_sem);
}

void flush_thread(void)
{
}

struct task_struct *__switch_to(struct task_struct *prev, struct task_struct *next)
{
	struct thread_info *pti = task_thread_info(prev);
	struct thread_info *nti = task_thread_info(next);
	struct knic_jmp_buf *unwind = pti->unwind_jb;
	void *prev_sem = pti->sched_sem;

	nti->prev_sched = prev;
	knic_current_ti = nti;

	if (READ_ONCE(prev->__state) == TASK_DEAD ||
	    test_ti_thread_flag(pti, TIF_KNIC_PARKING)) {
		/*
		 * prev's host thread leaves the kernel for good (task death) or until
		 * its next syscall (parking). After the post, next may free prev: touch
		 * nothing of it, only the unwind point read above.
		 */
		knic_host->sem_up(nti->sched_sem);
		knic_host->jmp_buf_longjmp(unwind);
	}

	knic_host->sem_up(nti->sched_sem);
	knic_host->sem_down(prev_sem);

	/* Resumed: someone switched back to prev, or the kernel is halting. */
	if (unlikely(READ_ONCE(knic_halting)))
		knic_host->jmp_buf_longjmp(task_thread_info(prev)->unwind_jb);
	return task_thread_info(prev)->prev_sched;
}
