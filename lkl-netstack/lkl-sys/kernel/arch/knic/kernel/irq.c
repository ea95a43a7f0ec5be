// SPDX-License-Identifier: GPL-2.0
/*
 * Interrupts.
 *
 * Any host thread may raise an interrupt: it sets a pending bit and kicks the CPU
 * (cpu.c), and never runs kernel code itself. The owner of the CPU runs pending
 * handlers whenever it turns interrupts back on; an idle CPU is woken to do so.
 * So handlers always run on the thread that owns the CPU, with the interrupted
 * task as current, as on hardware.
 */
#include <linux/interrupt.h>
#include <linux/irq.h>
#include <linux/hardirq.h>
#include <linux/bitops.h>
#include <linux/seq_file.h>
#include <asm/irq_regs.h>
#include <asm/knic.h>

#define KNIC_IRQ_WORDS BITS_TO_LONGS(NR_IRQS)

unsigned long knic_irq_flag = ARCH_IRQ_DISABLED;

static unsigned long knic_irq_pending[KNIC_IRQ_WORDS];
/* Non-zero when any bit above may be set: the common check is one load. */
static unsigned long knic_irq_pending_any;
/* Lines handed out to host devices (touched only by kernel code). */
static DECLARE_BITMAP(knic_irq_used, NR_IRQS);

static struct pt_regs knic_irq_frame;

int knic_trigger_irq(int irq)
{
	if (irq <= 0 || irq >= NR_IRQS)
		return -EINVAL;
	__atomic_fetch_or(&knic_irq_pending[irq / BITS_PER_LONG],
			  1UL << (irq % BITS_PER_LONG), __ATOMIC_SEQ_CST);
	__atomic_store_n(&knic_irq_pending_any, 1, __ATOMIC_SEQ_CST);
	knic_cpu_kick();
	return 0;
}

bool knic_irq_is_pending(void)
{
	return __atomic_load_n(&knic_irq_pending_any, __ATOMIC_SEQ_CST);
}

/* On the CPU owner's thread, with interrupts off. */
void knic_run_irqs(void)
{
	struct pt_regs *old_regs;
	int word;

	while (__atomic_exchange_n(&knic_irq_pending_any, 0, __ATOMIC_SEQ_CST)) {
		old_regs = set_irq_regs(&knic_irq_frame);
		irq_enter();
		for (word = 0; word < KNIC_IRQ_WORDS; word++) {
			unsigned long bits = __atomic_exchange_n(&knic_irq_pending[word], 0,
								 __ATOMIC_SEQ_CST);

			while (bits) {
				int bit = __ffs(bits);

				bits &= ~(1UL << bit);
				generic_handle_irq(word * BITS_PER_LONG + bit);
			}
		}
		irq_exit(); /* runs softirqs: NAPI, timers, the TCP receive path */
		set_irq_regs(old_regs);
	}
}

void arch_local_irq_restore(unsigned long flags)
{
	if (flags == ARCH_IRQ_ENABLED && knic_irq_flag == ARCH_IRQ_DISABLED &&
	    !in_hardirq() && knic_irq_is_pending())
		knic_run_irqs();
	knic_irq_flag = flags;
}

int knic_get_free_irq(const char *name)
{
	int irq;

	/* Called by host code before the devices it registers are probed. */
	for (irq = KNIC_FIRST_FREE_IRQ; irq < NR_IRQS; irq++)
		if (!test_and_set_bit(irq, knic_irq_used))
			return irq;
	return -ENOSPC;
}

void knic_put_irq(int irq)
{
	if (irq >= KNIC_FIRST_FREE_IRQ && irq < NR_IRQS)
		clear_bit(irq, knic_irq_used);
}

void __init init_IRQ(void)
{
	int irq;

	for (irq = 1; irq < NR_IRQS; irq++)
		irq_set_chip_and_handler(irq, &dummy_irq_chip, handle_simple_irq);
	set_bit(KNIC_TIMER_IRQ, knic_irq_used);
	set_bit(KNIC_WAKE_IRQ, knic_irq_used);
}

int arch_show_interrupts(struct seq_file *p, int prec)
{
	return 0;
}
