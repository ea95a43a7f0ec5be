/* SPDX-License-Identifier: GPL-2.0 */
/* Delays busy-wait on the host's monotonic clock. */
#ifndef _ASM_KNIC_DELAY_H
#define _ASM_KNIC_DELAY_H

void __ndelay(unsigned long nsecs);
void __udelay(unsigned long usecs);
void __delay(unsigned long loops);

#define ndelay(n)	__ndelay(n)
#define udelay(n)	__udelay(n)
#endif
