/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/* The asm-generic numbering, generated from scripts/syscall.tbl (64-bit ABI). */
#include <asm/unistd_64.h>

/*
 * The port's own calls, in the range asm-generic leaves to architectures
 * (244-259).
 *
 * knic_virtio_mmio_add(base, size, irq): probe a virtio-mmio device that the
 * host models at [base, base + size) and that raises irq; returns the platform
 * device id. Needs CAP_SYS_ADMIN.
 *
 * knic_virtio_mmio_remove(base): unregister the virtio-mmio device whose window
 * starts at base (added or from the command line); its driver's remove path runs
 * before the call returns. -ENODEV when there is none. Needs CAP_SYS_ADMIN.
 */
#define __NR_knic_virtio_mmio_add 244
#define __NR_knic_virtio_mmio_remove 245
