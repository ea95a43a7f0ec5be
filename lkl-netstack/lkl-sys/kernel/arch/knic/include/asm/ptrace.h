/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_KNIC_PTRACE_H
#define _ASM_KNIC_PTRACE_H

#include <uapi/asm/ptrace.h>

#ifndef __ASSEMBLY__
/* Tasks never run in user mode; interrupt handlers get an all-zero frame. */
struct pt_regs {
	unsigned long regs[4];
	unsigned long irq;
};

#define user_mode(regs)			0
#define kernel_mode(regs)		1
#define profile_pc(regs)		0
#define instruction_pointer(regs)	0
#define user_stack_pointer(regs)	0
#define current_user_stack_pointer()	0
#define task_pt_regs(tsk)		(&task_thread_info(tsk)->regs)
#define current_pt_regs()		task_pt_regs(current)

static inline long regs_return_value(struct pt_regs *regs)
{
	return 0;
}
#endif
#endif
