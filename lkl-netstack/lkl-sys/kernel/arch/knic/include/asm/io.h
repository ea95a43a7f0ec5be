/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_KNIC_IO_H
#define _ASM_KNIC_IO_H
#include <asm-generic/io.h>
#endif
