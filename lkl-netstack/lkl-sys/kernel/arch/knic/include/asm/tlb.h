/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_KNIC_TLB_H
#define _ASM_KNIC_TLB_H
/* No MMU, no TLB. */
#include <linux/pagemap.h>
#define tlb_flush(tlb) ((void)(tlb))
#include <asm-generic/tlb.h>
#endif
