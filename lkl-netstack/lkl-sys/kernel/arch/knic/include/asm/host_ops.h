/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_KNIC_HOST_OPS_H
#define _ASM_KNIC_HOST_OPS_H

#include <uapi/asm/host_ops.h>

/* Set once by knic_start_kernel(); never changes afterwards. */
extern const struct knic_host_ops *knic_host;

#endif
