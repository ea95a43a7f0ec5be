// SPDX-License-Identifier: GPL-2.0
/*
 * Time: the host's monotonic clock is the clocksource and sched_clock; one host
 * one-shot timer is the clockevent device, raising KNIC_TIMER_IRQ when it fires.
 */
#include <linux/clockchips.h>
#include <linux/clocksource.h>
#include <linux/interrupt.h>
#include <linux/sched/clock.h>
#include <linux/time.h>
#include <linux/delay.h>
#include <asm/knic.h>

static unsigned long long knic_boot_ns;
static void *knic_timer;

unsigned long long sched_clock(void)
{
	if (!knic_host)
		return 0;
	return knic_host->time_ns() - knic_boot_ns;
}

static u64 knic_clocksource_read(struct clocksource *cs)
{
	return knic_host->time_ns();
}

static struct clocksource knic_clocksource = {
	.name	= "knic",
	.rating	= 499,
	.read	= knic_clocksource_read,
	.mask	= CLOCKSOURCE_MASK(64),
	.flags	= CLOCK_SOURCE_IS_CONTINUOUS,
};

static int knic_timer_next_event(unsigned long delta_ns, struct clock_event_device *evt)
{
	/* delta 0 would disarm the host timer: fire as soon as possible instead. */
	return knic_host->timer_set_oneshot(knic_timer, delta_ns ? delta_ns : 1);
}

static int knic_timer_shutdown(struct clock_event_device *evt)
{
	return knic_host->timer_set_oneshot(knic_timer, 0);
}

static struct clock_event_device knic_clockevent = {
	.name			= "knic",
	.features		= CLOCK_EVT_FEAT_ONESHOT,
	.set_next_event		= knic_timer_next_event,
	.set_state_shutdown	= knic_timer_shutdown,
	.set_state_oneshot	= knic_timer_shutdown,
	.rating			= 499,
	.irq			= KNIC_TIMER_IRQ,
};

static irqreturn_t knic_timer_irq(int irq, void *dev_id)
{
	struct clock_event_device *evt = dev_id;

	if (clockevent_state_oneshot(evt))
		evt->event_handler(evt);
	return IRQ_HANDLED;
}

/* Host timer callback: any host thread; only raises the interrupt. */
static void knic_timer_fire(void *arg)
{
	knic_trigger_irq(KNIC_TIMER_IRQ);
}

void __init time_init(void)
{
	knic_boot_ns = knic_host->time_ns();
	knic_timer = knic_host->timer_alloc(knic_timer_fire, NULL);
	if (!knic_timer)
		panic("knic: the host cannot allocate a timer");
	if (request_irq(KNIC_TIMER_IRQ, knic_timer_irq, IRQF_TIMER, "timer", &knic_clockevent))
		panic("knic: cannot request the timer interrupt");
	clocksource_register_hz(&knic_clocksource, NSEC_PER_SEC);
	knic_clockevent.cpumask = cpumask_of(0);
	clockevents_config_and_register(&knic_clockevent, NSEC_PER_SEC, 1, ULONG_MAX);
	pr_info("knic: clock and timer from the host\n");
}

void knic_time_halt(void)
{
	if (knic_timer)
		knic_host->timer_free(knic_timer);
	knic_timer = NULL;
}

void read_persistent_clock64(struct timespec64 *ts)
{
	/* No wall clock from the host yet: the library's clock starts at the epoch. */
	ts->tv_sec = 0;
	ts->tv_nsec = 0;
}

void __ndelay(unsigned long nsecs)
{
	unsigned long long end = knic_host->time_ns() + nsecs;

	while (knic_host->time_ns() < end)
		cpu_relax();
}
EXPORT_SYMBOL(__ndelay);

void __udelay(unsigned long usecs)
{
	__ndelay(usecs * NSEC_PER_USEC);
}
EXPORT_SYMBOL(__udelay);

void __delay(unsigned long loops)
{
	__ndelay(loops);
}
EXPORT_SYMBOL(__delay);

void calibrate_delay(void)
{
}
