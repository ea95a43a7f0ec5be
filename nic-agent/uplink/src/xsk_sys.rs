//! The AF_XDP socket's `unsafe` parts: libxdp's `xsk_*` entry points (Debian's `libxdp`,
//! linked dynamically; LGPL-2.1 OR BSD-2-Clause), the UMEM area, and the four shared-memory
//! rings. Everything else in [`crate::xdp`] is safe code.
//!
//! Ownership model:
//! - [`Xsk`] owns the socket, its UMEM registration and the UMEM area (an anonymous mapping).
//!   It is shared (`Arc`) by the two halves of a port and torn down when the last half drops:
//!   socket first (libxdp then removes the socket from the XSK map and drops its reference
//!   to the XDP program), UMEM second, area last.
//! - The rings are copied out of libxdp's `struct xsk_ring_{prod,cons}` into [`ProdRing`] /
//!   [`ConsRing`], each owned by exactly one half: the sending half owns TX and completion,
//!   the receiving half owns RX and fill. libxdp's own copies (boxed, at stable addresses, as
//!   it keeps pointers to them) are only read again by `xsk_socket__delete`.
//! - UMEM frames are split the same way: the receiving half's frames circulate between the
//!   fill and RX rings, the sending half's between its free list, TX and completion. Neither
//!   half ever touches a frame of the other, so no lock is needed (see [`Umem`]).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// `struct xsk_ring_prod` / `struct xsk_ring_cons` (libxdp `xsk.h`, `DEFINE_XSK_RING`).
#[repr(C)]
#[derive(Debug)]
struct RawRing {
    cached_prod: u32,
    cached_cons: u32,
    mask: u32,
    size: u32,
    producer: *mut u32,
    consumer: *mut u32,
    ring: *mut libc::c_void,
    flags: *mut u32,
}

impl RawRing {
    const fn empty() -> Self {
        Self {
            cached_prod: 0,
            cached_cons: 0,
            mask: 0,
            size: 0,
            producer: std::ptr::null_mut(),
            consumer: std::ptr::null_mut(),
            ring: std::ptr::null_mut(),
            flags: std::ptr::null_mut(),
        }
    }
}

/// `struct xsk_umem_config`.
#[repr(C)]
struct UmemConfig {
    fill_size: u32,
    comp_size: u32,
    frame_size: u32,
    frame_headroom: u32,
    flags: u32,
}

/// `struct xsk_socket_config` (the `libbpf_flags`/`libxdp_flags` union is one `u32`).
#[repr(C)]
struct SocketConfig {
    rx_size: u32,
    tx_size: u32,
    libxdp_flags: u32,
    xdp_flags: u32,
    bind_flags: u16,
}

#[repr(C)]
struct XskUmemOpaque {
    _private: [u8; 0],
}

#[repr(C)]
struct XskSocketOpaque {
    _private: [u8; 0],
}

#[link(name = "xdp")]
unsafe extern "C" {
    fn xsk_umem__create(
        umem: *mut *mut XskUmemOpaque,
        umem_area: *mut libc::c_void,
        size: u64,
        fill: *mut RawRing,
        comp: *mut RawRing,
        config: *const UmemConfig,
    ) -> libc::c_int;
    fn xsk_socket__create(
        xsk: *mut *mut XskSocketOpaque,
        ifname: *const libc::c_char,
        queue_id: u32,
        umem: *mut XskUmemOpaque,
        rx: *mut RawRing,
        tx: *mut RawRing,
        config: *const SocketConfig,
    ) -> libc::c_int;
    fn xsk_socket__fd(xsk: *const XskSocketOpaque) -> libc::c_int;
    fn xsk_umem__fd(umem: *const XskUmemOpaque) -> libc::c_int;
    fn xsk_socket__delete(xsk: *mut XskSocketOpaque);
    fn xsk_umem__delete(umem: *mut XskUmemOpaque) -> libc::c_int;

    fn libxdp_get_error(ptr: *const libc::c_void) -> libc::c_long;
    fn xdp_multiprog__get_from_ifindex(ifindex: libc::c_int) -> *mut XdpMultiprogOpaque;
    fn xdp_multiprog__next_prog(
        prog: *const XdpProgramOpaque,
        mp: *const XdpMultiprogOpaque,
    ) -> *mut XdpProgramOpaque;
    fn xdp_multiprog__main_prog(mp: *const XdpMultiprogOpaque) -> *mut XdpProgramOpaque;
    fn xdp_multiprog__is_legacy(mp: *const XdpMultiprogOpaque) -> bool;
    fn xdp_multiprog__attach_mode(mp: *const XdpMultiprogOpaque) -> libc::c_int;
    fn xdp_multiprog__detach(mp: *mut XdpMultiprogOpaque) -> libc::c_int;
    fn xdp_multiprog__close(mp: *mut XdpMultiprogOpaque);
    fn xdp_program__name(prog: *const XdpProgramOpaque) -> *const libc::c_char;
    fn xdp_program__detach(
        prog: *mut XdpProgramOpaque,
        ifindex: libc::c_int,
        mode: libc::c_int,
        flags: u32,
    ) -> libc::c_int;
}

#[repr(C)]
struct XdpMultiprogOpaque {
    _private: [u8; 0],
}

#[repr(C)]
struct XdpProgramOpaque {
    _private: [u8; 0],
}

/// The name libxdp gives its default AF_XDP program (and looks up to reuse it).
pub const DEFAULT_PROGRAM: &str = "xsk_def_prog";

fn is_default(prog: *const XdpProgramOpaque) -> bool {
    if prog.is_null() {
        return false;
    }
    // SAFETY: `prog` is a live program of a live multiprog (caller); the name is a
    // NUL-terminated string libxdp owns for the program's lifetime, read before it goes.
    let name = unsafe { xdp_program__name(prog) };
    // SAFETY: as above; a null name is handled.
    !name.is_null()
        && unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes() == DEFAULT_PROGRAM.as_bytes()
}

/// What XDP program interface `ifindex` runs now, as far as an AF_XDP open cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachedProgram {
    None,
    /// libxdp's default program, alone or in libxdp's dispatcher: libxdp reuses it.
    Default,
    /// libxdp's dispatcher without it: libxdp adds its program there.
    Dispatcher,
    /// Some other program attached alone: libxdp cannot add to it (EBUSY).
    Foreign(String),
}

/// Looks at the program on `ifindex` (through libxdp, as the open will).
/// Runs `f` on libxdp's view of the programs on `ifindex` (a live multiprog object, closed
/// after `f`); `Ok(None)` when the interface runs no XDP program.
fn with_multiprog<T>(
    ifindex: libc::c_int,
    f: impl FnOnce(*mut XdpMultiprogOpaque) -> T,
) -> io::Result<Option<T>> {
    // SAFETY: returns a new multiprog object (or an error pointer, checked next) that we
    // close exactly once below.
    let mp = unsafe { xdp_multiprog__get_from_ifindex(ifindex) };
    // SAFETY: libxdp_get_error only inspects the pointer value (error pointers encode -errno).
    let err = unsafe { libxdp_get_error(mp.cast()) };
    if mp.is_null() || err != 0 {
        return match -err as i32 {
            0 | libc::ENOENT => Ok(None),
            e => Err(io::Error::from_raw_os_error(e)),
        };
    }
    let out = f(mp);
    // SAFETY: `mp` came from a successful get and is closed once; `f` kept nothing from it.
    unsafe { xdp_multiprog__close(mp) };
    Ok(Some(out))
}

pub fn attached_program(ifindex: libc::c_int) -> io::Result<AttachedProgram> {
    let found = with_multiprog(ifindex, |mp| {
        // SAFETY: `mp` is live for this closure; the programs it yields live as long, and
        // their names are copied out before it returns.
        unsafe {
            if xdp_multiprog__is_legacy(mp) {
                let main = xdp_multiprog__main_prog(mp);
                if main.is_null() {
                    AttachedProgram::None
                } else if is_default(main) {
                    AttachedProgram::Default
                } else {
                    let name = xdp_program__name(main);
                    let name = if name.is_null() {
                        String::from("?")
                    } else {
                        std::ffi::CStr::from_ptr(name)
                            .to_string_lossy()
                            .into_owned()
                    };
                    AttachedProgram::Foreign(name)
                }
            } else {
                let mut found = AttachedProgram::Dispatcher;
                let mut p = xdp_multiprog__next_prog(std::ptr::null(), mp);
                while !p.is_null() {
                    if is_default(p) {
                        found = AttachedProgram::Default;
                    }
                    p = xdp_multiprog__next_prog(p, mp);
                }
                found
            }
        }
    })?;
    Ok(found.unwrap_or(AttachedProgram::None))
}

/// Detaches libxdp's default AF_XDP program from `ifindex`, whether attached alone (legacy)
/// or inside libxdp's dispatcher; other programs are left alone. Nothing attached, or a
/// foreign program, is not an error.
pub fn detach_default_program(ifindex: libc::c_int) -> io::Result<()> {
    let ret = with_multiprog(ifindex, |mp| {
        // SAFETY: `mp` is live for this closure; the programs it yields live as long.
        unsafe {
            if xdp_multiprog__is_legacy(mp) {
                if is_default(xdp_multiprog__main_prog(mp)) {
                    return xdp_multiprog__detach(mp);
                }
                return 0;
            }
            let mut ours = std::ptr::null_mut();
            let mut others = 0;
            let mut p = xdp_multiprog__next_prog(std::ptr::null(), mp);
            while !p.is_null() {
                if is_default(p) {
                    ours = p;
                } else {
                    others += 1;
                }
                p = xdp_multiprog__next_prog(p, mp);
            }
            if ours.is_null() {
                0
            } else if others == 0 {
                xdp_multiprog__detach(mp)
            } else {
                xdp_program__detach(ours, ifindex, xdp_multiprog__attach_mode(mp), 0)
            }
        }
    })?;
    neg_errno(ret.unwrap_or(0))
}

/// `XDP_FLAGS_SKB_MODE` / `XDP_FLAGS_DRV_MODE` (`linux/if_link.h`).
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// What to create: sizes (powers of two) and the attach/bind flags.
#[derive(Debug, Clone, Copy)]
pub struct XskParams {
    pub frame_size: u32,
    /// Frames of the receiving half (and the fill ring's size).
    pub rx_frames: u32,
    /// Frames of the sending half (and the completion ring's size).
    pub tx_frames: u32,
    pub rx_size: u32,
    pub tx_size: u32,
    pub xdp_flags: u32,
    pub bind_flags: u16,
}

/// An anonymous, page-aligned mapping holding every UMEM frame.
#[derive(Debug)]
struct Area {
    base: NonNull<u8>,
    len: usize,
}

impl Area {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: an anonymous private mapping at an address the kernel picks aliases nothing;
        // the result is checked before use and unmapped exactly once, in `Drop`.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave 0"))?;
        Ok(Self { base, len })
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are the mapping made in `new`, unmapped only here. The kernel
        // pinned the pages it uses for the UMEM itself, so unmapping after the UMEM is gone
        // (field order in `Xsk`) cannot pull memory from under it.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// One AF_XDP socket bound to one queue, with its own UMEM. Shared by the port's halves.
#[derive(Debug)]
pub struct Xsk {
    socket: NonNull<XskSocketOpaque>,
    umem: NonNull<XskUmemOpaque>,
    fd: RawFd,
    // libxdp keeps pointers to these four until `xsk_socket__delete`: boxed, never moved.
    _fill: Box<RawRing>,
    _comp: Box<RawRing>,
    _rx: Box<RawRing>,
    _tx: Box<RawRing>,
    _area: Area,
}

// SAFETY: libxdp's socket and UMEM objects are only used again in `Drop` (one thread, once
// the last `Arc` holder is gone); the fd is a plain integer; the ring copies each half works
// on are its own (module doc). Nothing here is tied to the creating thread.
unsafe impl Send for Xsk {}
// SAFETY: shared references only read `fd` and the area's bounds; all mutation goes through
// the halves' own rings and frames (module doc).
unsafe impl Sync for Xsk {}

impl Drop for Xsk {
    fn drop(&mut self) {
        // SAFETY: both handles came from successful creates and are deleted exactly once,
        // socket before UMEM as libxdp requires (a UMEM with a socket returns EBUSY). The
        // boxed rings libxdp reads while deleting are still alive (fields drop after this).
        unsafe {
            xsk_socket__delete(self.socket.as_ptr());
            xsk_umem__delete(self.umem.as_ptr());
        }
    }
}

/// The four rings and the frame region of a newly created socket, to be handed out to the
/// halves.
#[derive(Debug)]
pub struct XskRings {
    pub fill: ProdRing,
    pub comp: ConsRing,
    pub rx: ConsRing,
    pub tx: ProdRing,
    pub umem: Umem,
}

fn neg_errno(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::from_raw_os_error(-ret))
    } else {
        Ok(())
    }
}

impl Xsk {
    /// Creates the UMEM (area + fill/completion rings) and the socket bound to `ifname`
    /// queue `queue`; libxdp loads (or reuses) its default redirect program and puts the
    /// socket into the program's XSK map. Errors carry libxdp's errno.
    pub fn create(ifname: &str, queue: u32, p: XskParams) -> io::Result<(Self, XskRings)> {
        let name = CString::new(ifname)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has NUL"))?;
        let frames = p.rx_frames as usize + p.tx_frames as usize;
        let area = Area::new(frames * p.frame_size as usize)?;
        let mut fill = Box::new(RawRing::empty());
        let mut comp = Box::new(RawRing::empty());
        let mut rx = Box::new(RawRing::empty());
        let mut tx = Box::new(RawRing::empty());
        let ucfg = UmemConfig {
            fill_size: p.rx_frames,
            comp_size: p.tx_frames,
            frame_size: p.frame_size,
            frame_headroom: 0,
            flags: 0,
        };
        let mut umem: *mut XskUmemOpaque = std::ptr::null_mut();
        // SAFETY: `area` is a live mapping of exactly `area.len` bytes, page-aligned (mmap);
        // `fill`/`comp` are boxed, so the addresses libxdp keeps stay valid until the
        // `Xsk` owning the boxes deletes the UMEM; `ucfg` is read during the call only.
        neg_errno(unsafe {
            xsk_umem__create(
                &mut umem,
                area.base.as_ptr().cast(),
                area.len as u64,
                &mut *fill,
                &mut *comp,
                &ucfg,
            )
        })?;
        let umem = NonNull::new(umem).ok_or_else(|| io::Error::other("xsk_umem__create gave 0"))?;
        let scfg = SocketConfig {
            rx_size: p.rx_size,
            tx_size: p.tx_size,
            libxdp_flags: 0,
            xdp_flags: p.xdp_flags,
            bind_flags: p.bind_flags,
        };
        let mut socket: *mut XskSocketOpaque = std::ptr::null_mut();
        // SAFETY: `name` is NUL-terminated and outlives the call; `umem` was just created and
        // has no socket yet; `rx`/`tx` are boxed (stable addresses libxdp keeps until
        // `xsk_socket__delete`); `scfg` is read during the call only.
        let ret = unsafe {
            xsk_socket__create(
                &mut socket,
                name.as_ptr(),
                queue,
                umem.as_ptr(),
                &mut *rx,
                &mut *tx,
                &scfg,
            )
        };
        if let Err(e) = neg_errno(ret) {
            // A failed create leaves the fill/completion rings mapped (libxdp keeps them for
            // a retry on the same UMEM); unmap them, then drop the UMEM.
            // SAFETY: `umem` has no socket (the create failed), so its fd is still ours.
            let ufd = unsafe { xsk_umem__fd(umem.as_ptr()) };
            unmap_umem_rings(ufd, &fill, &comp, &ucfg);
            // SAFETY: `umem` came from a successful create and has no socket; deleted once.
            unsafe { xsk_umem__delete(umem.as_ptr()) };
            return Err(e);
        }
        let socket =
            NonNull::new(socket).ok_or_else(|| io::Error::other("xsk_socket__create gave 0"))?;
        // SAFETY: `socket` is a live socket object just created.
        let fd = unsafe { xsk_socket__fd(socket.as_ptr()) };
        let umem_view = Umem {
            base: area.base,
            len: area.len,
        };
        let rings = (|| {
            Some(XskRings {
                fill: ProdRing::from_raw(&fill)?,
                comp: ConsRing::from_raw(&comp)?,
                rx: ConsRing::from_raw(&rx)?,
                tx: ProdRing::from_raw(&tx)?,
                umem: umem_view,
            })
        })();
        let xsk = Self {
            socket,
            umem,
            fd,
            _fill: fill,
            _comp: comp,
            _rx: rx,
            _tx: tx,
            _area: area,
        };
        // On `None`, dropping `xsk` deletes the socket and UMEM again.
        let rings = rings.ok_or_else(|| io::Error::other("libxdp returned an incomplete ring"))?;
        Ok((xsk, rings))
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Whether the socket is bound in zero-copy mode (`XDP_OPTIONS`).
    pub fn zero_copy(&self) -> bool {
        let mut opts = libc::xdp_options { flags: 0 };
        let mut len = std::mem::size_of::<libc::xdp_options>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `opts`, a live local of that size.
        let r = unsafe {
            libc::getsockopt(
                self.fd,
                libc::SOL_XDP,
                libc::XDP_OPTIONS,
                (&mut opts as *mut libc::xdp_options).cast(),
                &mut len,
            )
        };
        r == 0 && opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0
    }

    /// The socket's cumulative kernel counters (`XDP_STATISTICS`).
    pub fn statistics(&self) -> io::Result<libc::xdp_statistics> {
        // SAFETY: xdp_statistics is plain old data; all-zero is valid.
        let mut st: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `st`, a live local of that size.
        let r = unsafe {
            libc::getsockopt(
                self.fd,
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                (&mut st as *mut libc::xdp_statistics).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(st)
    }

    /// Asks the kernel to transmit what the TX ring holds (`sendto` with no data; copy mode
    /// moves up to 32 frames per call and says EAGAIN when more wait).
    pub fn kick_tx(&self) -> io::Result<()> {
        // SAFETY: a zero-length sendto with no buffer and no address touches no memory.
        let r = unsafe {
            libc::sendto(
                self.fd,
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Tells the driver the fill ring has frames again (`recvfrom` with no buffer).
    pub fn kick_rx(&self) {
        // SAFETY: a zero-length recvfrom with no buffer and no address touches no memory.
        unsafe {
            libc::recvfrom(
                self.fd,
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }
}

/// Unmaps the fill and completion rings of a UMEM whose socket create failed, as libxdp's
/// own teardown computes them (`XDP_MMAP_OFFSETS`: each ring's mapping starts `desc` bytes
/// before its descriptor array).
fn unmap_umem_rings(ufd: RawFd, fill: &RawRing, comp: &RawRing, cfg: &UmemConfig) {
    // SAFETY: xdp_mmap_offsets is plain old data; all-zero is valid.
    let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `off`, a live local of that size.
    let r = unsafe {
        libc::getsockopt(
            ufd,
            libc::SOL_XDP,
            libc::XDP_MMAP_OFFSETS,
            (&mut off as *mut libc::xdp_mmap_offsets).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return;
    }
    for (ring, entries, o) in [
        (fill, cfg.fill_size, off.fr.desc),
        (comp, cfg.comp_size, off.cr.desc),
    ] {
        if ring.ring.is_null() {
            continue;
        }
        let o = o as usize;
        // SAFETY: libxdp mapped this ring at `ring - desc` for `desc + entries * 8` bytes
        // (xsk_create_umem_rings) and, the create having failed, nothing else refers to it;
        // it is unmapped once, here.
        unsafe {
            libc::munmap(
                ring.ring.cast::<u8>().sub(o).cast(),
                o + entries as usize * std::mem::size_of::<u64>(),
            )
        };
    }
}

/// The UMEM area as the halves see it: byte ranges of frames they own.
#[derive(Debug)]
pub struct Umem {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Umem` is a view of the area owned by `Xsk` (kept alive by the same half's `Arc`);
// each half reads/writes only frames it owns at the time (module doc), so moving the view to
// the half's thread creates no shared mutable access.
unsafe impl Send for Umem {}

impl Umem {
    pub fn len(&self) -> usize {
        self.len
    }

    /// A second view of the same area, for the other half (each touches only its own frames).
    pub fn view(&self) -> Umem {
        Umem {
            base: self.base,
            len: self.len,
        }
    }

    /// Bytes `[off, off + len)`, `None` when outside the area.
    ///
    /// The caller must own the frame holding these bytes (it came back on the RX ring or sits
    /// in the sending half's free list): the kernel writes only frames posted to it.
    pub fn bytes(&self, off: u64, len: usize) -> Option<&[u8]> {
        let off = usize::try_from(off).ok()?;
        if off.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: `[off, off+len)` lies inside the live mapping (checked above); the frame is
        // owned by this half (caller's contract, module doc), so nothing writes it meanwhile.
        Some(unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(off), len) })
    }

    /// Bytes `[off, off + len)` to write, `None` when outside the area. Same ownership
    /// contract as [`Umem::bytes`]; `&mut self` keeps two such borrows from overlapping.
    pub fn bytes_mut(&mut self, off: u64, len: usize) -> Option<&mut [u8]> {
        let off = usize::try_from(off).ok()?;
        if off.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: in bounds (checked above); the frame is this half's (caller's contract) and
        // `&mut self` makes this the only live borrow through this view.
        Some(unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(off), len) })
    }
}

/// Shared ring indices: the kernel writes one, we write the other; both are free-running u32.
#[derive(Debug)]
struct RingPtrs {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    ring: NonNull<u8>,
    mask: u32,
    size: u32,
}

impl RingPtrs {
    /// `None` unless libxdp filled in every pointer and a power-of-two size.
    fn from_raw(r: &RawRing) -> Option<Self> {
        if !r.size.is_power_of_two() || r.mask != r.size - 1 {
            return None;
        }
        Some(Self {
            producer: NonNull::new(r.producer.cast())?,
            consumer: NonNull::new(r.consumer.cast())?,
            flags: NonNull::new(r.flags.cast())?,
            ring: NonNull::new(r.ring.cast())?,
            mask: r.mask,
            size: r.size,
        })
    }

    fn load(p: NonNull<AtomicU32>, order: Ordering) -> u32 {
        // SAFETY: the pointer is into the ring's mapping, live while the owning `Xsk` is
        // (the half holding this ring holds it); the kernel accesses it atomically too.
        unsafe { p.as_ref() }.load(order)
    }

    fn store(p: NonNull<AtomicU32>, v: u32) {
        // SAFETY: as in `load`; only this half writes this index (the other is the kernel's).
        unsafe { p.as_ref() }.store(v, Ordering::Release)
    }

    /// Pointer to entry `idx` (masked, so always inside the `size`-entry array).
    fn entry<T>(&self, idx: u32) -> *mut T {
        let i = (idx & self.mask) as usize;
        // SAFETY: libxdp mapped `size` entries of `T` at `ring`, `mask = size - 1`, so
        // `i < size` stays inside the mapping.
        unsafe { self.ring.as_ptr().cast::<T>().add(i) }
    }
}

/// A ring we produce into (fill, TX), as libxdp's `xsk_ring_prod__*` helpers.
#[derive(Debug)]
pub struct ProdRing {
    p: RingPtrs,
    cached_prod: u32,
    cached_cons: u32,
}

// SAFETY: the ring's mapping lives as long as the `Xsk` the owning half keeps; only that half
// uses this ring (module doc).
unsafe impl Send for ProdRing {}

impl ProdRing {
    fn from_raw(r: &RawRing) -> Option<Self> {
        Some(Self {
            p: RingPtrs::from_raw(r)?,
            cached_prod: r.cached_prod,
            cached_cons: r.cached_cons,
        })
    }

    /// Free entries, refreshing from the kernel's consumer index when fewer than `want`.
    pub fn free(&mut self, want: u32) -> u32 {
        let free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free >= want {
            return free;
        }
        self.cached_cons =
            RingPtrs::load(self.p.consumer, Ordering::Acquire).wrapping_add(self.p.size);
        self.cached_cons.wrapping_sub(self.cached_prod)
    }

    /// Reserves `n` entries; returns the first index, `None` when fewer are free.
    pub fn reserve(&mut self, n: u32) -> Option<u32> {
        if self.free(n) < n {
            return None;
        }
        let idx = self.cached_prod;
        self.cached_prod = self.cached_prod.wrapping_add(n);
        Some(idx)
    }

    /// Gives back the last `n` reserved, not yet submitted entries.
    pub fn unreserve(&mut self, n: u32) {
        self.cached_prod = self.cached_prod.wrapping_sub(n);
    }

    /// Publishes `n` filled entries to the kernel.
    pub fn submit(&mut self, n: u32) {
        let prod = RingPtrs::load(self.p.producer, Ordering::Relaxed);
        RingPtrs::store(self.p.producer, prod.wrapping_add(n));
    }

    pub fn needs_wakeup(&self) -> bool {
        RingPtrs::load(self.p.flags, Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Entries the kernel has not consumed yet.
    pub fn pending(&self) -> u32 {
        let prod = RingPtrs::load(self.p.producer, Ordering::Relaxed);
        prod.wrapping_sub(RingPtrs::load(self.p.consumer, Ordering::Acquire))
    }

    /// Writes a frame address into fill-ring entry `idx` (reserved, not yet submitted).
    pub fn set_addr(&mut self, idx: u32, addr: u64) {
        // SAFETY: in-bounds entry (masked) of a u64 ring; reserved entries are ours until
        // submitted, the kernel reads them only after the release store in `submit`.
        unsafe { self.p.entry::<u64>(idx).write(addr) }
    }

    /// Writes a descriptor into TX-ring entry `idx` (reserved, not yet submitted).
    pub fn set_desc(&mut self, idx: u32, addr: u64, len: u32) {
        let d = libc::xdp_desc {
            addr,
            len,
            options: 0,
        };
        // SAFETY: as in `set_addr`, for a ring of `struct xdp_desc`.
        unsafe { self.p.entry::<libc::xdp_desc>(idx).write(d) }
    }
}

/// A ring we consume from (RX, completion), as libxdp's `xsk_ring_cons__*` helpers.
#[derive(Debug)]
pub struct ConsRing {
    p: RingPtrs,
    cached_prod: u32,
    cached_cons: u32,
}

// SAFETY: as for `ProdRing`.
unsafe impl Send for ConsRing {}

impl ConsRing {
    fn from_raw(r: &RawRing) -> Option<Self> {
        Some(Self {
            p: RingPtrs::from_raw(r)?,
            cached_prod: r.cached_prod,
            cached_cons: r.cached_cons,
        })
    }

    /// Takes up to `n` entries; returns (count, first index).
    pub fn peek(&mut self, n: u32) -> (u32, u32) {
        let mut avail = self.cached_prod.wrapping_sub(self.cached_cons);
        if avail == 0 {
            self.cached_prod = RingPtrs::load(self.p.producer, Ordering::Acquire);
            avail = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        // The kernel cannot produce more than the ring holds; a larger gap is not trusted.
        let got = avail.min(n).min(self.p.size);
        let idx = self.cached_cons;
        self.cached_cons = self.cached_cons.wrapping_add(got);
        (got, idx)
    }

    /// Hands `n` consumed entries back to the kernel.
    pub fn release(&mut self, n: u32) {
        let cons = RingPtrs::load(self.p.consumer, Ordering::Relaxed);
        RingPtrs::store(self.p.consumer, cons.wrapping_add(n));
    }

    /// The frame address in completion-ring entry `idx` (peeked, not yet released).
    pub fn addr(&self, idx: u32) -> u64 {
        // SAFETY: in-bounds entry (masked) of a u64 ring, published by the kernel before its
        // release store of the producer index we acquired in `peek`.
        unsafe { self.p.entry::<u64>(idx).read() }
    }

    /// The descriptor in RX-ring entry `idx` (peeked, not yet released).
    pub fn desc(&self, idx: u32) -> libc::xdp_desc {
        // SAFETY: as in `addr`, for a ring of `struct xdp_desc`.
        unsafe { self.p.entry::<libc::xdp_desc>(idx).read() }
    }
}
