/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The interrupt flag is a plain variable of the one CPU. Host threads raise
 * interrupts by setting pending bits (irq.c); they run on the CPU owner's thread
 * when it enables interrupts, so re-enabling is out of line.
 */
#ifndef _ASM_KNIC_IRQFLAGS_H
#define _ASM_KNIC_IRQFLAGS_H

extern unsigned long knic_irq_flag;

static inline unsigned long arch_local_save_flags(void)
{
	return knic_irq_flag;
}
#define arch_local_save_flags arch_local_save_flags

void arch_local_irq_restore(unsigned long flags);
#define arch_local_irq_restore arch_local_irq_restore

#include <asm-generic/irqflags.h>
#endif
