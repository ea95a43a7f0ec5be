// SPDX-License-Identifier: GPL-2.0
/*
 * Devices that arrive and leave while the kernel runs. The host models
 * virtio-mmio devices (their registers reach it through the iomem_access host
 * operation); at boot it lists them on the command line, later it adds them with
 * knic_virtio_mmio_add and takes them away with knic_virtio_mmio_remove.
 *
 * Both calls are synchronous. Adding registers a platform device, and the
 * virtio_mmio driver probes it (and virtio_net registers its interface) before
 * the call returns. Removing unregisters the platform device, so the driver's
 * remove path runs before the call returns: virtio_net unregisters the interface,
 * resets the device (a STATUS write of 0, which the host model sees as a register
 * write from this thread) and deletes its virtqueues; virtio_mmio frees its
 * interrupt, and the device's memory resource leaves the iomem tree, so the same
 * window and line can serve a later device.
 *
 * A device is named by the base of its window, which the host chose and which
 * is unique among live devices; this finds devices from the command line
 * ("virtio-mmio.N") and added ones ("virtio-mmio.N.auto") alike.
 */
#include <linux/capability.h>
#include <linux/device/bus.h>
#include <linux/ioport.h>
#include <linux/mutex.h>
#include <linux/platform_device.h>
#include <linux/string.h>
#include <linux/syscalls.h>
#include <asm/irq.h>

/* Adds and removals are serialised: a removal finds, then unregisters. */
static DEFINE_MUTEX(knic_devices_lock);

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
	mutex_lock(&knic_devices_lock);
	pdev = platform_device_register_simple("virtio-mmio", PLATFORM_DEVID_AUTO,
					       res, ARRAY_SIZE(res));
	mutex_unlock(&knic_devices_lock);
	if (IS_ERR(pdev))
		return PTR_ERR(pdev);
	return pdev->id;
}

/* A virtio-mmio platform device whose register window starts at *data. */
static int knic_match_mmio_base(struct device *dev, const void *data)
{
	struct platform_device *pdev = to_platform_device(dev);
	struct resource *mem;

	if (strcmp(pdev->name, "virtio-mmio"))
		return 0;
	mem = platform_get_resource(pdev, IORESOURCE_MEM, 0);
	return mem && mem->start == *(const unsigned long *)data;
}

SYSCALL_DEFINE1(knic_virtio_mmio_remove, unsigned long, base)
{
	struct device *dev;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	mutex_lock(&knic_devices_lock);
	dev = bus_find_device(&platform_bus_type, NULL, &base,
			      knic_match_mmio_base);
	if (dev) {
		/* Runs the driver's remove; our reference keeps dev valid. */
		platform_device_unregister(to_platform_device(dev));
		put_device(dev);
	}
	mutex_unlock(&knic_devices_lock);
	return dev ? 0 : -ENODEV;
}
