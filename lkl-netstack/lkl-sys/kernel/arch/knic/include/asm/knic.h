/* SPDX-License-Identifier: GPL-2.0 */
/* Internal interfaces between the pieces of the knic architecture port. */
#ifndef _ASM_KNIC_KNIC_H
#define _ASM_KNIC_KNIC_H

#include <linux/types.h>
#include <asm/host_ops.h>

struct thread_info;
struct task_struct;

/*
 * The host-memory frame of a kernel thread's host thread (threads.c): it outlives
 * the task, so the thread can unwind and free it after the task's memory is gone.
 */
struct knic_kthread_frame {
	struct knic_jmp_buf unwind_jb;
	void *sched_sem;
	/* Set when the task is freed before it ever ran: the thread just returns. */
	int aborted;
	struct thread_info *ti;
};

extern unsigned long knic_ram_bytes;
extern void *knic_boot_sem;
extern bool knic_halting;

/* setup.c */
void knic_boot_done(int result);

/* mm/bootmem.c */
extern unsigned long knic_ram_alloc_start, knic_ram_alloc_bytes;
void knic_bootmem_init(unsigned long bytes);

/* time.c */
void knic_time_halt(void);

/* cpu.c */
int knic_cpu_init(void);
void knic_cpu_kick(void);
void knic_kthread_started(void);
void knic_kthread_gone(void);
void knic_drain_notify(void);
void __noreturn knic_halt_machine(void);
bool knic_enter_refused(void);

/* irq.c */
void knic_run_irqs(void);
bool knic_irq_is_pending(void);

/* threads.c */
struct knic_kthread_frame *knic_kthread_frame_alloc(struct thread_info *ti);
void knic_kthread_frame_release(struct knic_kthread_frame *frame);
void knic_kthread_set_unwind(struct thread_info *ti);

/* syscall.c: one per host thread that has called in; host memory, freed at thread exit. */
struct knic_host_task {
	void *sem;			/* the thread sleeps here until its task runs */
	struct task_struct *task;	/* set by copy_thread(); NULL until created */
	struct knic_host_task *next;	/* wake-list / create-list link */
	int create_err;
	bool exiting;			/* the host thread is exiting: run do_exit() */
};

int knic_host_task_fn(void *arg);
int knic_host_task_bind(struct task_struct *p, void *arg);
void knic_syscall_init(void);
void knic_syscall_stop_entries(void);
long knic_syscall_inflight(void);
void knic_syscall_wake_all_waiters(void);

/* init.c */
void __noreturn knic_init_main(void);
void knic_init_queue_create(struct knic_host_task *ht);
void knic_init_fail_pending_creates(void);

#endif
