/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
#ifndef _UAPI_ASM_KNIC_SIGCONTEXT_H
#define _UAPI_ASM_KNIC_SIGCONTEXT_H
/* Signals are never delivered to host threads; the type exists for generic headers. */
struct sigcontext {
	unsigned long sc_unused;
};
#endif
