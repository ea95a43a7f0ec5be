/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_KNIC_STRING_H
#define _ASM_KNIC_STRING_H
/* The kernel's generic lib/string.c routines; nothing arch-specific. */
#endif
