/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_KNIC_PROCESSOR_H
#define _ASM_KNIC_PROCESSOR_H

#ifndef __ASSEMBLY__
#include <linux/compiler.h>
#include <asm/irqflags.h>

struct task_struct;

struct thread_struct {
	/* Kernel threads: what the host thread runs once the task is first switched to. */
	int (*fn)(void *);
	void *fn_arg;
};

#define INIT_THREAD { }

/*
 * Busy-wait loops must let interrupts in: they are only ever delivered when the
 * interrupt flag is restored (see irqflags.h).
 */
static inline void cpu_relax(void)
{
	unsigned long flags = arch_local_irq_save();

	arch_local_irq_restore(flags);
}

/* No user address space: everything is addressable. */
#define TASK_SIZE	(~0UL)
#define TASK_SIZE_MAX	TASK_SIZE
#define TASK_UNMAPPED_BASE 0
#define STACK_TOP	TASK_SIZE
#define STACK_TOP_MAX	STACK_TOP

#define KSTK_EIP(tsk)	(0)
#define KSTK_ESP(tsk)	(0)

static inline unsigned long __get_wchan(struct task_struct *p)
{
	return 0;
}

static inline void prepare_to_copy(struct task_struct *tsk)
{
}

#define current_text_addr() ({ __label__ _l; _l: &&_l; })

#endif
#endif
