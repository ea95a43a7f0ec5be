// SPDX-License-Identifier: GPL-2.0
/*
 * The kernel's hot copies: every byte a socket moves passes through memcpy (the
 * nommu copy_{to,from}_user are memcpy). The host's C library has vectorised
 * versions; without them, word-at-a-time loops.
 */
#include <linux/export.h>
#include <linux/types.h>
#include <asm/host_ops.h>

void *memcpy(void *dest, const void *src, size_t n)
{
	unsigned char *d = dest;
	const unsigned char *s = src;

	if (likely(knic_host && knic_host->memcpy))
		return knic_host->memcpy(dest, src, n);
	for (; n >= sizeof(long); n -= sizeof(long), d += sizeof(long), s += sizeof(long))
		__builtin_memcpy(d, s, sizeof(long)); /* fixed size: inlined, no call */
	while (n--)
		*d++ = *s++;
	return dest;
}
EXPORT_SYMBOL(memcpy);

void *memmove(void *dest, const void *src, size_t n)
{
	unsigned char *d = dest;
	const unsigned char *s = src;

	if (likely(knic_host && knic_host->memmove))
		return knic_host->memmove(dest, src, n);
	if (d <= s || d >= s + n) {
		while (n--)
			*d++ = *s++;
	} else {
		d += n;
		s += n;
		while (n--)
			*--d = *--s;
	}
	return dest;
}
EXPORT_SYMBOL(memmove);

void *memset(void *s, int c, size_t n)
{
	unsigned char *p = s;

	if (likely(knic_host && knic_host->memset))
		return knic_host->memset(s, c, n);
	while (n--)
		*p++ = c;
	return s;
}
EXPORT_SYMBOL(memset);
