/* SPDX-License-Identifier: GPL-2.0 */
/* No ELF loader: the one program this kernel "executes" is the library's init (init.c). */
#ifndef _ASM_KNIC_ELF_H
#define _ASM_KNIC_ELF_H

#define ELF_CLASS	ELFCLASS64
#define ELF_DATA	ELFDATA2LSB
#define ELF_ARCH	EM_NONE
#define elf_check_arch(x)	0

typedef unsigned long elf_greg_t;
#define ELF_NGREG 1
typedef elf_greg_t elf_gregset_t[ELF_NGREG];
typedef struct { } elf_fpregset_t;

#define ELF_EXEC_PAGESIZE	4096
#define ELF_HWCAP		(0)
#define ELF_PLATFORM		(NULL)
#define ELF_ET_DYN_BASE		(0)
#endif
