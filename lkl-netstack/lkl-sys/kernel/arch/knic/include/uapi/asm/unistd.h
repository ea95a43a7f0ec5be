/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/* The asm-generic numbering, generated from scripts/syscall.tbl (64-bit ABI). */
#include <asm/unistd_64.h>
