//! The MMIO bus: the kernel's readX/writeX of a device window become calls into
//! the device model registered for that window.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};
use std::sync::{Arc, RwLock};

/// Windows start here, 64 KiB apart: addresses the kernel only uses as register
/// keys (its ioremap is the identity; nothing ever dereferences them).
pub(crate) const MMIO_BASE: u64 = 0x1000_0000_0000;
pub(crate) const MMIO_STRIDE: u64 = 0x1_0000;
pub(crate) const MMIO_SIZE: u64 = 0x1000;

/// A device's register window.
pub(crate) trait MmioDevice: Send + Sync {
    fn read(&self, offset: u64, data: &mut [u8]);
    fn write(&self, offset: u64, data: &[u8]);
}

static BUS: RwLock<Vec<(u64, Arc<dyn MmioDevice>)>> = RwLock::new(Vec::new());

fn bus() -> std::sync::RwLockWriteGuard<'static, Vec<(u64, Arc<dyn MmioDevice>)>> {
    BUS.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Registers a device in the lowest free window and returns the window's base: a
/// window freed by [`unregister`] serves the next device, so adding and removing
/// devices forever uses as many windows as were ever live at once.
pub(crate) fn register(device: Arc<dyn MmioDevice>) -> u64 {
    let mut bus = bus();
    let base = (0..)
        .map(|slot| MMIO_BASE + MMIO_STRIDE * slot)
        .find(|base| bus.iter().all(|(b, _)| b != base))
        .unwrap_or(MMIO_BASE); // the iterator is endless: never taken
    bus.push((base, device));
    base
}

/// Frees the window at `base`, once the kernel no longer knows a device there (its
/// driver was removed, or it never probed). Returns the device, if one was there.
pub(crate) fn unregister(base: u64) -> Option<Arc<dyn MmioDevice>> {
    let mut bus = bus();
    let slot = bus.iter().position(|(b, _)| *b == base)?;
    Some(bus.swap_remove(slot).1)
}

/// The `iomem_access` host operation.
pub(crate) unsafe extern "C" fn iomem_access(
    addr: *const c_void,
    val: *mut c_void,
    size: c_int,
    write: c_int,
) -> c_int {
    let Ok(size) = usize::try_from(size) else {
        return -libc::EINVAL;
    };
    if !matches!(size, 1 | 2 | 4 | 8) || val.is_null() {
        return -libc::EINVAL;
    }
    let addr = addr as u64;
    let bus = BUS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some((base, device)) = bus
        .iter()
        .find(|(base, _)| (*base..*base + MMIO_SIZE).contains(&addr))
    else {
        return -libc::ENODEV;
    };
    // SAFETY: the kernel passes a pointer to a `size`-byte value for the access.
    let data = unsafe { std::slice::from_raw_parts_mut(val.cast::<u8>(), size) };
    if write != 0 {
        device.write(addr - base, data);
    } else {
        device.read(addr - base, data);
    }
    0
}
