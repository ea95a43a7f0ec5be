/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_KNIC_CURRENT_H
#define _ASM_KNIC_CURRENT_H
#include <asm/thread_info.h>
#define get_current() (current_thread_info()->task)
#define current get_current()
#endif
