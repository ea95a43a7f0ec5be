/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Exchange primitives on the compiler's __atomic builtins: atomic even against
 * host threads, and cheaper than turning the (out-of-line) interrupt flag off.
 */
#ifndef _ASM_KNIC_CMPXCHG_H
#define _ASM_KNIC_CMPXCHG_H

#define arch_xchg(ptr, x)						\
	__atomic_exchange_n((ptr), (__typeof__(*(ptr)))(x), __ATOMIC_SEQ_CST)

#define arch_cmpxchg(ptr, o, n)						\
({									\
	__typeof__(*(ptr)) __knic_old = (__typeof__(*(ptr)))(o);	\
	__atomic_compare_exchange_n((ptr), &__knic_old,			\
				    (__typeof__(*(ptr)))(n), false,	\
				    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); \
	__knic_old;							\
})

#define arch_cmpxchg_local	arch_cmpxchg
#define arch_cmpxchg64		arch_cmpxchg
#define arch_cmpxchg64_local	arch_cmpxchg

#endif
