/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_KNIC_VMALLOC_H
#define _ASM_KNIC_VMALLOC_H
/* No MMU: vmalloc is backed by the page allocator (mm/nommu.c). */
#endif
