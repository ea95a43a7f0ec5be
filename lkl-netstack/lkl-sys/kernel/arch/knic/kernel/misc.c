// SPDX-License-Identifier: GPL-2.0
/* Small arch hooks that have nothing to do on a library kernel. */
#include <linux/kernel.h>
#include <linux/sched/debug.h>
#include <linux/syscalls.h>
#include <linux/mm.h>
#include <linux/seq_file.h>
#include <asm/ptrace.h>

void show_regs(struct pt_regs *regs)
{
	show_regs_print_info(KERN_DEFAULT);
}

void dump_stack_print_info(const char *log_lvl);

void free_initmem(void)
{
	/* The init sections are part of the host's image, not of the RAM arena. */
}

SYSCALL_DEFINE6(mmap, unsigned long, addr, unsigned long, len, unsigned long, prot,
		unsigned long, flags, unsigned long, fd, off_t, off)
{
	if (off & ~PAGE_MASK)
		return -EINVAL;
	return ksys_mmap_pgoff(addr, len, prot, flags, fd, off >> PAGE_SHIFT);
}

/* /proc/cpuinfo: one CPU with nothing to say. */
static void *c_start(struct seq_file *m, loff_t *pos)
{
	return *pos < 1 ? (void *)1 : NULL;
}

static void *c_next(struct seq_file *m, void *v, loff_t *pos)
{
	++*pos;
	return NULL;
}

static void c_stop(struct seq_file *m, void *v)
{
}

static int show_cpuinfo(struct seq_file *m, void *v)
{
	seq_puts(m, "processor\t: 0\nmodel name\t: knic library CPU\n\n");
	return 0;
}

const struct seq_operations cpuinfo_op = {
	.start	= c_start,
	.next	= c_next,
	.stop	= c_stop,
	.show	= show_cpuinfo,
};

/* Nothing to trace: tasks never run in user mode. */
long arch_ptrace(struct task_struct *child, long request, unsigned long addr,
		 unsigned long data)
{
	return -EIO;
}

void ptrace_disable(struct task_struct *child)
{
}

void show_stack(struct task_struct *task, unsigned long *sp, const char *loglvl)
{
	printk("%s  (stack traces are taken by the host: a debugger sees the kernel's C frames)\n",
	       loglvl);
}

/* Signal frames are never set up, so there is nothing to return from. */
SYSCALL_DEFINE0(rt_sigreturn)
{
	return -ENOSYS;
}
