/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Device registers live in the host: every MMIO access is a host operation, so
 * device models (virtio-mmio) are plain host code. Without MMU, ioremap() is the
 * identity and the "physical" address is the host's key for the register window.
 */
#ifndef _ASM_KNIC_IO_H
#define _ASM_KNIC_IO_H

#include <linux/types.h>
#include <asm/host_ops.h>

#define KNIC_IOMEM_ACCESSORS(bwlq, type)					\
static inline type __raw_read##bwlq(const volatile void __iomem *addr)		\
{										\
	type val = (type)~0ULL;							\
										\
	knic_host->iomem_access((const volatile void __force *)addr, &val,	\
				sizeof(type), 0);				\
	return val;								\
}										\
static inline void __raw_write##bwlq(type val, volatile void __iomem *addr)	\
{										\
	knic_host->iomem_access((const volatile void __force *)addr, &val,	\
				sizeof(type), 1);				\
}

KNIC_IOMEM_ACCESSORS(b, u8)
KNIC_IOMEM_ACCESSORS(w, u16)
KNIC_IOMEM_ACCESSORS(l, u32)
KNIC_IOMEM_ACCESSORS(q, u64)

#define __raw_readb __raw_readb
#define __raw_readw __raw_readw
#define __raw_readl __raw_readl
#define __raw_readq __raw_readq
#define __raw_writeb __raw_writeb
#define __raw_writew __raw_writew
#define __raw_writel __raw_writel
#define __raw_writeq __raw_writeq

#include <asm-generic/io.h>
#endif
