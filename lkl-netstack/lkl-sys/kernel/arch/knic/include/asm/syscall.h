/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_KNIC_SYSCALL_H
#define _ASM_KNIC_SYSCALL_H

#include <uapi/linux/audit.h>
#include <linux/sched.h>
#include <asm/ptrace.h>

/* knic_syscall() calls handlers directly with six longs; no pt_regs wrappers. */
typedef long (*knic_syscall_fn)(long, long, long, long, long, long);
extern const knic_syscall_fn knic_syscall_table[];

static inline int syscall_get_nr(struct task_struct *task, struct pt_regs *regs)
{
	return -1;
}

static inline int syscall_get_arch(struct task_struct *task)
{
#ifdef __aarch64__
	return AUDIT_ARCH_AARCH64;
#else
	return AUDIT_ARCH_X86_64;
#endif
}
#endif
