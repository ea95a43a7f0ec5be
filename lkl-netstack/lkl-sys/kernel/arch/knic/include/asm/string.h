/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_KNIC_STRING_H
#define _ASM_KNIC_STRING_H
/*
 * memcpy, memmove and memset call the host's routines when it provides them
 * (lib/string.c); the rest of the string functions are the kernel's generic ones.
 */
#define __HAVE_ARCH_MEMCPY
#define __HAVE_ARCH_MEMMOVE
#define __HAVE_ARCH_MEMSET
extern void *memcpy(void *dest, const void *src, __kernel_size_t n);
extern void *memmove(void *dest, const void *src, __kernel_size_t n);
extern void *memset(void *s, int c, __kernel_size_t n);
#endif
