// SPDX-License-Identifier: GPL-2.0
/*
 * The syscall table, generated from scripts/syscall.tbl (asm-generic numbering,
 * 64-bit ABI). Handlers are called with six longs; handlers with fewer parameters
 * ignore the rest (the host C ABI passes them in registers).
 */
#include <linux/linkage.h>
#include <asm/unistd.h>

typedef long (*knic_syscall_fn)(long, long, long, long, long, long);
const knic_syscall_fn knic_syscall_table[__NR_syscalls];

#define __SYSCALL_WITH_COMPAT(nr, native, compat) __SYSCALL(nr, native)

#define __SYSCALL(nr, call) asmlinkage long call(long, long, long, long, long, long);
#include <asm/syscall_table_64.h>
#undef __SYSCALL

asmlinkage long sys_knic_virtio_mmio_add(long, long, long, long, long, long);
asmlinkage long sys_knic_virtio_mmio_remove(long, long, long, long, long, long);

#define __SYSCALL(nr, call) [nr] = call,
const knic_syscall_fn knic_syscall_table[__NR_syscalls] = {
	[0 ... __NR_syscalls - 1] = sys_ni_syscall,
#include <asm/syscall_table_64.h>
	/* The port's own, in the range left to architectures (asm/unistd.h). */
	[__NR_knic_virtio_mmio_add] = sys_knic_virtio_mmio_add,
	[__NR_knic_virtio_mmio_remove] = sys_knic_virtio_mmio_remove,
};
