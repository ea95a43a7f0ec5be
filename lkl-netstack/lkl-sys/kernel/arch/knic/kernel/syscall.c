// SPDX-License-Identifier: GPL-2.0
/*
 * Syscalls from host threads.
 *
 * The first knic_syscall() of a host thread asks PID 1 (init.c) to create a task
 * for it: a thread of PID 1's process, so all host threads share one fd table.
 * The task is bound to the caller's host thread: its semaphore is one the caller
 * sleeps on, so when the scheduler switches to the task, the caller's own thread
 * continues as the task, runs the handler and then "parks": the task sleeps in
 * TASK_PARKED and __switch_to() unwinds the caller back here instead of blocking.
 *
 * To enter again the caller pushes itself on a lock-free wake list and raises the
 * wake interrupt; the handler (on whichever thread owns the CPU) wakes the parked
 * task, and the scheduler eventually switches to it. Nobody else wakes a
 * TASK_PARKED task, so each entry pairs with exactly one switch.
 */
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/task_work.h>
#include <linux/resume_user_mode.h>
#include <linux/interrupt.h>
#include <linux/syscalls.h>
#include <linux/reboot.h>
#include <asm/host_ops.h>
#include <asm/syscall.h>
#include <asm/unistd.h>
#include <asm/knic.h>

struct knic_syscall_frame {
	struct knic_jmp_buf jb;
	struct knic_host_task *ht;
	long nr;
	const long *params;
	long ret;
};

static long knic_task_key = -1;
static struct knic_host_task *knic_wake_list;

/* Entries in flight, so a halt knows when no host thread is inside anymore. */
static long knic_inflight;
static bool knic_running;

int knic_host_task_fn(void *arg)
{
	/* Only a marker for copy_thread(): host tasks run on their caller's thread. */
	BUG();
}

int knic_host_task_bind(struct task_struct *p, void *arg)
{
	struct knic_host_task *ht = arg;

	task_thread_info(p)->sched_sem = ht->sem;
	ht->task = p;
	return 0;
}

/* Called by the wake interrupt: on the CPU owner's thread, interrupts off. */
static irqreturn_t knic_wake_irq(int irq, void *dev_id)
{
	struct knic_host_task *ht, *next;

	ht = __atomic_exchange_n(&knic_wake_list, NULL, __ATOMIC_ACQUIRE);
	for (; ht; ht = next) {
		next = ht->next;
		if (ht->task)
			wake_up_state(ht->task, TASK_PARKED);
		else
			knic_init_queue_create(ht);
	}
	return IRQ_HANDLED;
}

static void knic_wake_list_push(struct knic_host_task *ht)
{
	struct knic_host_task *head = __atomic_load_n(&knic_wake_list, __ATOMIC_RELAXED);

	do {
		ht->next = head;
	} while (!__atomic_compare_exchange_n(&knic_wake_list, &head, ht, true,
					      __ATOMIC_RELEASE, __ATOMIC_RELAXED));
	knic_trigger_irq(KNIC_WAKE_IRQ);
}

/* What a return to user mode would do; there is no user mode to deliver signals to. */
static void knic_syscall_exit_work(void)
{
	if (test_thread_flag(TIF_NOTIFY_SIGNAL))
		clear_notify_signal();
	if (task_work_pending(current))
		task_work_run();
	if (test_thread_flag(TIF_NOTIFY_RESUME))
		resume_user_mode_work(NULL);
	if (signal_pending(current))
		flush_signals(current);
}

/* Runs on the caller's host thread once its task is current. */
static void knic_syscall_run(void *arg)
{
	struct knic_syscall_frame *f = arg;
	struct thread_info *ti = current_thread_info();
	const long *p = f->params;

	ti->unwind_jb = &f->jb;
	clear_ti_thread_flag(ti, TIF_KNIC_PARKING);
	/* We were switched to; finish that switch as a newly started task would. */
	schedule_tail(ti->prev_sched);

	if (f->ht->exiting)
		do_exit(0); /* unwinds to f->jb through __switch_to */

	f->ret = knic_syscall_table[f->nr](p[0], p[1], p[2], p[3], p[4], p[5]);
	knic_syscall_exit_work();

	/* Park: give the CPU away and unwind to knic_host_task_enter(). */
	set_ti_thread_flag(ti, TIF_KNIC_PARKING);
	set_current_state(TASK_PARKED);
	schedule();
	BUG(); /* TASK_PARKED is only woken by our own entry, which cannot be pending */
}

static long knic_host_task_enter(struct knic_host_task *ht, struct knic_syscall_frame *f)
{
	f->ht = ht;
	f->ret = -ESHUTDOWN; /* what the caller sees if a halt cuts the call short */
	knic_wake_list_push(ht);
	knic_host->sem_down(ht->sem);
	if (READ_ONCE(knic_halting))
		return -ESHUTDOWN;
	if (!ht->task)
		return ht->create_err;
	knic_host->jmp_buf_set(&f->jb, knic_syscall_run, f);
	return f->ret;
}

static bool knic_enter_begin(void)
{
	__atomic_add_fetch(&knic_inflight, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&knic_running, __ATOMIC_SEQ_CST))
		return true;
	__atomic_sub_fetch(&knic_inflight, 1, __ATOMIC_SEQ_CST);
	return false;
}

static void knic_enter_end(void)
{
	if (__atomic_sub_fetch(&knic_inflight, 1, __ATOMIC_SEQ_CST) <= 1 &&
	    __atomic_load_n(&knic_halting, __ATOMIC_SEQ_CST))
		knic_drain_notify();
}

/* Halt (cpu.c): no new entries; the halting thread waits for the others to leave. */
void knic_syscall_stop_entries(void)
{
	__atomic_store_n(&knic_running, false, __ATOMIC_SEQ_CST);
}

long knic_syscall_inflight(void)
{
	return __atomic_load_n(&knic_inflight, __ATOMIC_SEQ_CST);
}

static struct knic_host_task *knic_host_task_current(void)
{
	struct knic_host_task *ht = knic_host->tls_get(knic_task_key);

	if (ht)
		return ht;
	ht = knic_host->mem_alloc(sizeof(*ht));
	if (!ht)
		return NULL;
	memset(ht, 0, sizeof(*ht));
	ht->sem = knic_host->sem_alloc(0);
	if (!ht->sem || knic_host->tls_set(knic_task_key, ht)) {
		if (ht->sem)
			knic_host->sem_free(ht->sem);
		knic_host->mem_free(ht);
		return NULL;
	}
	return ht;
}

/* TLS destructor: the host thread is exiting, so its task exits too. */
static void knic_host_task_release(void *arg)
{
	struct knic_host_task *ht = arg;
	struct knic_syscall_frame f;

	if (ht->task && knic_enter_begin()) {
		ht->exiting = true;
		knic_host_task_enter(ht, &f);
		knic_enter_end();
	}
	knic_host->sem_free(ht->sem);
	knic_host->mem_free(ht);
}

long knic_syscall(long nr, const long *params)
{
	static const long no_params[6];
	struct knic_syscall_frame f;
	struct knic_host_task *ht;
	long ret;

	if (nr < 0 || nr >= __NR_syscalls)
		return -ENOSYS;
	if (!knic_enter_begin())
		return -ESHUTDOWN;
	ht = knic_host_task_current();
	if (ht) {
		f.nr = nr;
		f.params = params ? params : no_params;
		ret = knic_host_task_enter(ht, &f);
	} else {
		ret = -ENOMEM;
	}
	knic_enter_end();
	return ret;
}

long knic_halt(void)
{
	const long params[6] = { LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2,
				 LINUX_REBOOT_CMD_POWER_OFF, 0 };
	long ret = knic_syscall(__NR_reboot, params);

	return knic_is_running() ? ret : 0;
}

int knic_is_running(void)
{
	return __atomic_load_n(&knic_running, __ATOMIC_SEQ_CST);
}

/* From PID 1 once init is up: host threads may call in from now on. */
void knic_syscall_init(void)
{
	knic_task_key = knic_host->tls_alloc(knic_host_task_release);
	BUG_ON(knic_task_key < 0);
	if (request_irq(KNIC_WAKE_IRQ, knic_wake_irq, 0, "knic-wake", NULL))
		panic("knic: cannot request the wake interrupt");
	__atomic_store_n(&knic_running, true, __ATOMIC_SEQ_CST);
}

/* For the halt: every host thread waiting to enter or being created. */
void knic_syscall_wake_all_waiters(void)
{
	struct knic_host_task *ht, *next;

	ht = __atomic_exchange_n(&knic_wake_list, NULL, __ATOMIC_ACQUIRE);
	for (; ht; ht = next) {
		next = ht->next;
		knic_host->sem_up(ht->sem);
	}
}
