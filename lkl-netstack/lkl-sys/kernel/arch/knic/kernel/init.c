// SPDX-License-Identifier: GPL-2.0
/*
 * PID 1.
 *
 * kernel_init() ends by executing /init, and a kernel without a successful exec
 * panics. The library has no programs, so a late initcall creates an empty /init
 * and registers a binary format that accepts exactly that one exec by PID 1: it
 * does the exec bookkeeping (PID 1 gets an mm and credentials like any process)
 * and returns. threads.c then sends PID 1 here instead of to user mode.
 *
 * PID 1 then creates the tasks of host threads (syscall.c): as threads of its own
 * process they share its fd table, cwd and signal handlers.
 */
#include <linux/init.h>
#include <linux/binfmts.h>
#include <linux/fs.h>
#include <linux/file.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/wait.h>
#include <linux/module.h>
#include <asm/knic.h>

#define KNIC_INIT_PATH "/init"

static bool knic_init_execed;
/* Host threads waiting for a task; touched only with interrupts off. */
static struct knic_host_task *knic_create_list;
static DECLARE_WAIT_QUEUE_HEAD(knic_create_wq);

static int knic_init_load_binary(struct linux_binprm *bprm)
{
	int ret;

	if (!is_global_init(current) || knic_init_execed)
		return -ENOEXEC;
	ret = begin_new_exec(bprm);
	if (ret)
		return ret;
	setup_new_exec(bprm);
	finalize_exec(bprm);
	knic_init_execed = true;
	return 0;
}

static struct linux_binfmt knic_init_format = {
	.module = THIS_MODULE,
	.load_binary = knic_init_load_binary,
};

static int __init knic_init_binfmt(void)
{
	/*
	 * Created without write access: PID 1's fput() is deferred to a return to
	 * user mode that never comes, and an open writer would make the exec fail
	 * with ETXTBSY.
	 */
	struct file *file = filp_open(KNIC_INIT_PATH, O_CREAT | O_RDONLY, 0700);

	if (IS_ERR(file)) {
		pr_err("knic: cannot create %s: %ld\n", KNIC_INIT_PATH, PTR_ERR(file));
		return PTR_ERR(file);
	}
	fput(file);
	register_binfmt(&knic_init_format);
	return 0;
}
late_initcall(knic_init_binfmt);

/* From the wake interrupt (syscall.c). */
void knic_init_queue_create(struct knic_host_task *ht)
{
	ht->next = knic_create_list;
	knic_create_list = ht;
	wake_up(&knic_create_wq);
}

static struct knic_host_task *knic_take_creates(void)
{
	struct knic_host_task *list;
	unsigned long flags;

	local_irq_save(flags);
	list = knic_create_list;
	knic_create_list = NULL;
	local_irq_restore(flags);
	return list;
}

/* Halt: host threads still waiting for a task are let go (cpu.c). */
void knic_init_fail_pending_creates(void)
{
	struct knic_host_task *ht, *next;

	for (ht = knic_take_creates(); ht; ht = next) {
		next = ht->next;
		ht->create_err = -ESHUTDOWN;
		knic_host->sem_up(ht->sem);
	}
}

/* Signals are never delivered (no user mode): ignored ones are never even queued. */
static void knic_ignore_signals(void)
{
	struct k_sigaction *action = current->sighand->action;
	int sig;

	spin_lock_irq(&current->sighand->siglock);
	for (sig = 1; sig <= _NSIG; sig++)
		if (!sig_kernel_only(sig))
			action[sig - 1].sa.sa_handler = SIG_IGN;
	spin_unlock_irq(&current->sighand->siglock);
}

void __noreturn knic_init_main(void)
{
	const unsigned long flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND |
				    CLONE_THREAD | CLONE_SYSVSEM;

	knic_ignore_signals();
	knic_syscall_init();
	pr_info("knic: ready for host threads\n");
	knic_boot_done(0);

	for (;;) {
		struct knic_host_task *ht, *next;

		wait_event_idle(knic_create_wq, READ_ONCE(knic_create_list));
		for (ht = knic_take_creates(); ht; ht = next) {
			pid_t pid;

			/* Once created, the task may run and re-link ht: read next first. */
			next = ht->next;
			pid = user_mode_thread(knic_host_task_fn, ht, flags);
			if (pid < 0) {
				ht->task = NULL;
				ht->create_err = pid;
				knic_host->sem_up(ht->sem);
			}
		}
	}
}
