//! The kernel's RAM as vm-memory guest memory, so device models walk virtqueues
//! with the same checked accessors a VMM uses. Without an MMU the kernel's
//! "physical" addresses are host addresses: the region is mapped at identity.
#![allow(unsafe_code)]

use std::sync::OnceLock;

use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

static KERNEL_RAM: OnceLock<GuestMemoryMmap> = OnceLock::new();

/// Called once, from the `page_alloc` host operation that hands the kernel its RAM.
pub(crate) fn register_kernel_ram(addr: *mut u8, size: usize) {
    // SAFETY: the mapping [addr, addr + size) was just created by page_alloc and
    // stays mapped until the kernel halts (after which no device touches it).
    let region = unsafe {
        MmapRegion::<()>::build_raw(
            addr,
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
        )
    };
    let memory = region
        .ok()
        .and_then(|r| GuestRegionMmap::new(r, GuestAddress(addr as u64)))
        .and_then(|r| GuestMemoryMmap::from_regions(vec![r]).ok());
    match memory {
        Some(m) => {
            if KERNEL_RAM.set(m).is_err() {
                tracing::error!("the kernel asked for RAM twice; devices use the first arena");
            }
        }
        None => tracing::error!("cannot describe the kernel's RAM for device models"),
    }
}

pub(crate) fn kernel_ram() -> Option<&'static GuestMemoryMmap> {
    KERNEL_RAM.get()
}
