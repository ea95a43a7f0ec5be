// SPDX-License-Identifier: GPL-2.0
/*
 * Boot: knic_start_kernel() hands the host operations over, starts start_kernel()
 * on a host thread of its own (which becomes the idle task once boot is done) and
 * waits until PID 1 has "executed" the library's init (init.c). Halt: the power-off
 * path stops every kernel thread and refuses further entries (halt.c semantics live
 * in cpu.c where the hand-over is).
 */
#include <linux/init.h>
#include <linux/kernel.h>
#include <linux/start_kernel.h>
#include <linux/string.h>
#include <linux/sched/task.h>
#include <linux/panic_notifier.h>
#include <linux/reboot.h>
#include <linux/pm.h>
#include <asm/host_ops.h>
#include <asm/setup.h>
#include <asm/knic.h>

const struct knic_host_ops *knic_host;
unsigned long knic_ram_bytes;

/* Posted by PID 1 once the kernel is ready for syscalls (init.c). */
void *knic_boot_sem;
static int knic_boot_result;

static void __ref knic_boot_thread_run(void *unused)
{
	knic_kthread_set_unwind(&init_thread_info);
	start_kernel();
}

static void knic_boot_thread(void *unused)
{
	struct knic_kthread_frame *frame = knic_kthread_frame_alloc(&init_thread_info);

	if (!frame) {
		knic_boot_result = -ENOMEM;
		knic_host->sem_up(knic_boot_sem);
		return;
	}
	init_thread_info.kthread_frame = frame;
	knic_kthread_started();
	knic_host->jmp_buf_set(&frame->unwind_jb, knic_boot_thread_run, NULL);
	/* Only a halt brings the idle task's host thread here. */
	knic_host->sem_free(frame->sched_sem);
	knic_kthread_frame_release(frame);
	knic_kthread_gone();
}

void knic_boot_done(int result)
{
	knic_boot_result = result;
	knic_host->sem_up(knic_boot_sem);
}

int __ref knic_start_kernel(const struct knic_host_ops *ops, unsigned long mem_bytes,
		      const char *cmdline)
{
	if (knic_host)
		return -EBUSY; /* one kernel per process, and only once */
	if (!ops || !ops->sem_alloc || !ops->thread_create || !ops->jmp_buf_set)
		return -EINVAL;
	knic_host = ops;
	knic_ram_bytes = mem_bytes;
	strscpy(boot_command_line, cmdline ? cmdline : "", COMMAND_LINE_SIZE);

	knic_boot_sem = ops->sem_alloc(0);
	init_thread_info.sched_sem = ops->sem_alloc(0);
	if (!knic_boot_sem || !init_thread_info.sched_sem || knic_cpu_init())
		return -ENOMEM;
	if (!ops->thread_create(knic_boot_thread, NULL))
		return -EAGAIN;

	ops->sem_down(knic_boot_sem);
	return knic_boot_result;
}

static int __init knic_mem_param(char *p)
{
	unsigned long bytes = memparse(p, &p);

	if (bytes)
		knic_ram_bytes = bytes;
	return 0;
}
early_param("mem", knic_mem_param);

static int knic_panic_event(struct notifier_block *nb, unsigned long event, void *ptr)
{
	if (knic_host->panic)
		knic_host->panic();
	return NOTIFY_DONE;
}

static struct notifier_block knic_panic_nb = {
	.notifier_call = knic_panic_event,
};

void __init setup_arch(char **cmdline_p)
{
	*cmdline_p = boot_command_line;
	parse_early_param();
	atomic_notifier_chain_register(&panic_notifier_list, &knic_panic_nb);
	knic_bootmem_init(knic_ram_bytes);
}

void machine_halt(void)
{
	knic_halt_machine();
}

void machine_power_off(void)
{
	knic_halt_machine();
}

void machine_restart(char *cmd)
{
	knic_halt_machine();
}

static void knic_power_off(void)
{
	knic_halt_machine();
}

void (*pm_power_off)(void) = knic_power_off;
EXPORT_SYMBOL(pm_power_off);
