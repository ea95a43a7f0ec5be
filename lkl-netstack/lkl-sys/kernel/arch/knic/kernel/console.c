// SPDX-License-Identifier: GPL-2.0
/* The kernel log goes to the host's print operation (the Rust side routes it to tracing). */
#include <linux/console.h>
#include <linux/init.h>
#include <asm/knic.h>

static void knic_console_write(struct console *con, const char *str, unsigned int len)
{
	if (knic_host->print)
		knic_host->print(str, len);
}

static struct console knic_console = {
	.name	= "knic",
	.write	= knic_console_write,
	.flags	= CON_PRINTBUFFER | CON_ENABLED,
	.index	= -1,
};

static int __init knic_console_init(void)
{
	register_console(&knic_console);
	return 0;
}
console_initcall(knic_console_init);
