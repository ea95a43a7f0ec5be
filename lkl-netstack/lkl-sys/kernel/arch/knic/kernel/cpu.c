// SPDX-License-Identifier: GPL-2.0
/*
 * The one CPU: idle, kicks from host threads, and halting.
 *
 * The idle task's host thread sleeps on a semaphore while nothing is runnable.
 * knic_cpu_kick() (any host thread, after marking an interrupt pending) posts it
 * only when idle says it is asleep: a Dekker-style handshake on two flags, both
 * sides using sequentially consistent atomics, so no kick is lost or doubled.
 */
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/cpu.h>
#include <linux/clockchips.h>
#include <linux/memblock.h>
#include <asm/knic.h>

bool knic_halting;
static void *knic_idle_sem;
static int knic_idle_sleeping;

/* Host threads that still have to leave before a halt may free the RAM arena. */
static long knic_kthreads_alive;
static void *knic_drain_sem;


int knic_cpu_init(void)
{
	knic_idle_sem = knic_host->sem_alloc(0);
	knic_drain_sem = knic_host->sem_alloc(0);
	return knic_idle_sem && knic_drain_sem ? 0 : -ENOMEM;
}

void knic_kthread_started(void)
{
	__atomic_add_fetch(&knic_kthreads_alive, 1, __ATOMIC_SEQ_CST);
}

/* The last thing a kernel thread's host thread does (no kernel memory after this). */
void knic_kthread_gone(void)
{
	__atomic_sub_fetch(&knic_kthreads_alive, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&knic_halting, __ATOMIC_SEQ_CST))
		knic_host->sem_up(knic_drain_sem);
}

/* Posted whenever a host thread leaves an entry during a halt (syscall.c). */
void knic_drain_notify(void)
{
	knic_host->sem_up(knic_drain_sem);
}

void knic_cpu_kick(void)
{
	if (__atomic_exchange_n(&knic_idle_sleeping, 0, __ATOMIC_SEQ_CST))
		knic_host->sem_up(knic_idle_sem);
}

/* Entered and left with interrupts off (the generic idle loop turns them on). */
void arch_cpu_idle(void)
{
	while (!knic_irq_is_pending() && !need_resched()) {
		__atomic_store_n(&knic_idle_sleeping, 1, __ATOMIC_SEQ_CST);
		if (knic_irq_is_pending()) {
			/* Raced with a kick: if it already claimed us, take its post. */
			if (!__atomic_exchange_n(&knic_idle_sleeping, 0, __ATOMIC_SEQ_CST))
				knic_host->sem_down(knic_idle_sem);
			break;
		}
		knic_host->sem_down(knic_idle_sem);
	}
}

/*
 * Power off: runs as the calling host task, owning the CPU. Every other task's
 * thread is asleep on its semaphore; wake them all with knic_halting set and they
 * unwind (kernel threads end, host threads return -ESHUTDOWN). Then wait until no
 * host thread is inside an entry, and unwind the caller too.
 */
void __noreturn knic_halt_machine(void)
{
	struct task_struct *g, *t;
	struct knic_jmp_buf *unwind = current_thread_info()->unwind_jb;

	pr_info("knic: halting\n");
	local_irq_disable();
	knic_time_halt();
	__atomic_store_n(&knic_halting, true, __ATOMIC_SEQ_CST);

	for_each_process_thread(g, t) {
		if (t != current && task_thread_info(t)->sched_sem)
			knic_host->sem_up(task_thread_info(t)->sched_sem);
	}
	knic_host->sem_up(init_thread_info.sched_sem); /* the idle task */
	knic_syscall_wake_all_waiters();
	knic_init_fail_pending_creates();
	knic_syscall_stop_entries();
	while (knic_syscall_inflight() > 1 ||
	       __atomic_load_n(&knic_kthreads_alive, __ATOMIC_SEQ_CST) > 0)
		knic_host->sem_down(knic_drain_sem);

	/* Nothing runs kernel code anymore: give the RAM arena back. */
	knic_host->page_free((void *)knic_ram_alloc_start, knic_ram_alloc_bytes);
	knic_host->jmp_buf_longjmp(unwind);
}
