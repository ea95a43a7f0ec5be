// SPDX-License-Identifier: GPL-2.0
/* No assembly in this architecture: nothing to export to it. */
#define ASM_OFFSETS_C
#include <linux/kbuild.h>

void knic_asm_offsets(void);
void knic_asm_offsets(void)
{
}
