// SPDX-License-Identifier: GPL-2.0
/*
 * Devices that arrive while the kernel runs. The host models virtio-mmio devices
 * (their registers reach it through the iomem_access host operation); at boot
 * it lists them on the command line, later it adds them with this call. The
 * probe runs before the call returns, so a network device is registered by then.
 */
#include <linux/capability.h>
#include <linux/ioport.h>
#include <linux/platform_device.h>
#include <linux/syscalls.h>
#include <asm/irq.h>

SYSCALL_DEFINE3(knic_virtio_mmio_add, unsigned long, base, unsigned long, size,
		unsigned int, irq)
{
	struct resource res[] = {
		DEFINE_RES_MEM(base, size),
		DEFINE_RES_IRQ(irq),
	};
	struct platform_device *pdev;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	if (!size || base + size < base || irq < KNIC_FIRST_FREE_IRQ ||
	    irq >= NR_IRQS)
		return -EINVAL;
	pdev = platform_device_register_simple("virtio-mmio", PLATFORM_DEVID_AUTO,
					       res, ARRAY_SIZE(res));
	if (IS_ERR(pdev))
		return PTR_ERR(pdev);
	return pdev->id;
}
