/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
#ifndef _UAPI_ASM_KNIC_PTRACE_H
#define _UAPI_ASM_KNIC_PTRACE_H
/* There is no user mode to trace: tasks are host threads. */
#endif
