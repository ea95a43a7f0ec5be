/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_KNIC_IRQ_H
#define _ASM_KNIC_IRQ_H

#define NR_IRQS			CONFIG_KNIC_NR_IRQS
/* Fixed lines; the rest are handed out by knic_get_free_irq(). */
#define KNIC_TIMER_IRQ		1
#define KNIC_WAKE_IRQ		2
#define KNIC_FIRST_FREE_IRQ	3

#include <asm-generic/irq.h>
#endif
