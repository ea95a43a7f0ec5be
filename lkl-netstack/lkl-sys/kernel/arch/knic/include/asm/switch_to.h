/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_KNIC_SWITCH_TO_H
#define _ASM_KNIC_SWITCH_TO_H
struct task_struct;
/* Hands the CPU to next's host thread; returns, on resumption, the task we came from. */
struct task_struct *__switch_to(struct task_struct *prev, struct task_struct *next);
#define switch_to(prev, next, last) ((last) = __switch_to((prev), (next)))
#endif
