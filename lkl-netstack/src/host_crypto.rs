//! The `aes_gcm_*` host operations: the kernel's "gcm(aes)" (kernel TLS)
//! computed in host code with the CPU's AES and carry-less multiply
//! instructions. The kernel side (arch/knic/crypto/host_gcm.c) expands each key
//! once into a handle here and passes each request as a list of segments of
//! its own memory, which is this process's memory; see host_ops.h.
#![allow(unsafe_code)]

mod gcm;

use std::alloc::Layout;
use std::ffi::{c_int, c_uint, c_void};

use lkl_sys::knic_crypt_seg;

use gcm::{GcmKey, IV_LEN, Piece, TAG_LEN};
pub use gcm::{HostCryptoCounters, host_crypto_counters};

/// Most segments in one request (the kernel's HOST_GCM_MAX_SEGS).
const MAX_SEGS: usize = 40;

/// `aes_gcm_key_new`: a boxed [`GcmKey`], or NULL.
pub(crate) unsafe extern "C" fn aes_gcm_key_new(key: *const u8, key_len: c_uint) -> *mut c_void {
    // SAFETY: the kernel passes a key of key_len bytes, valid for the call.
    let key = unsafe { std::slice::from_raw_parts(key, key_len as usize) };
    match GcmKey::new(key) {
        Ok(key) => Box::into_raw(Box::new(key)).cast(),
        Err(_) => std::ptr::null_mut(),
    }
}

/// `aes_gcm_key_free`: drops the key and overwrites its bytes before the
/// memory goes back (the expanded key schedules live inline in it).
pub(crate) unsafe extern "C" fn aes_gcm_key_free(key: *mut c_void) {
    let key = key.cast::<GcmKey>();
    if key.is_null() {
        return;
    }
    // SAFETY: `key` came from Box::into_raw in aes_gcm_key_new and the kernel
    // frees each handle once, after its last crypt (host_ops.h), so nothing else
    // refers to it. After drop_in_place the bytes are dead; they are overwritten
    // with volatile writes (not elided) and freed with the Box's own layout.
    unsafe {
        std::ptr::drop_in_place(key);
        let bytes = key.cast::<u8>();
        for i in 0..size_of::<GcmKey>() {
            std::ptr::write_volatile(bytes.add(i), 0);
        }
        std::alloc::dealloc(bytes, Layout::new::<GcmKey>());
    }
}

/// `aes_gcm_crypt`: one message, as segments; see host_ops.h.
pub(crate) unsafe extern "C" fn aes_gcm_crypt(
    key: *const c_void,
    encrypt: c_int,
    iv: *const u8,
    segs: *const knic_crypt_seg,
    aad_segs: c_uint,
    data_segs: c_uint,
    tag: *mut u8,
) -> c_int {
    let (aad_n, data_n) = (aad_segs as usize, data_segs as usize);
    if aad_n > MAX_SEGS || data_n > MAX_SEGS - aad_n {
        return -libc::EINVAL;
    }
    // SAFETY: `key` is a live handle from aes_gcm_key_new (the transform holds it
    // until exit, after its last request), only read here. The IV is 12 bytes,
    // the tag 16, and the segment array aad_segs + data_segs entries, all kernel
    // memory valid for the call.
    let (key, iv, tag, segs) = unsafe {
        (
            &*key.cast::<GcmKey>(),
            &*iv.cast::<[u8; IV_LEN]>(),
            &mut *tag.cast::<[u8; TAG_LEN]>(),
            std::slice::from_raw_parts(segs, aad_n + data_n),
        )
    };
    let mut aad: [&[u8]; MAX_SEGS] = [&[]; MAX_SEGS];
    for (slot, seg) in aad.iter_mut().zip(&segs[..aad_n]) {
        // SAFETY: an AAD segment is len readable bytes at src (host_ops.h),
        // only read during the call.
        *slot = unsafe { std::slice::from_raw_parts(seg.src, seg.len as usize) };
    }
    let data_segs = &segs[aad_n..];
    if let Some(whole) = one_destination(data_segs) {
        // SAFETY: the destinations are writable for the call and adjacent, so
        // together they are the one range [first dst, + total len); an
        // out-of-place source does not overlap its destination (the driver sends
        // overlapping ones to the generic code), and sources are not written.
        let whole = unsafe {
            for seg in data_segs
                .iter()
                .filter(|seg| !std::ptr::eq(seg.src, seg.dst))
            {
                std::ptr::copy_nonoverlapping(seg.src, seg.dst, seg.len as usize);
            }
            std::slice::from_raw_parts_mut(whole.0, whole.1)
        };
        let mut data = [Piece::InPlace(whole)];
        return match key.crypt(encrypt != 0, iv, &aad[..aad_n], &mut data, tag) {
            Ok(()) => 0,
            Err(e) => -e.errno(),
        };
    }
    let mut data: [Piece<'_>; MAX_SEGS] = std::array::from_fn(|_| Piece::InPlace(&mut []));
    for (slot, seg) in data.iter_mut().zip(data_segs) {
        let len = seg.len as usize;
        *slot = if std::ptr::eq(seg.src, seg.dst) {
            // SAFETY: in place: len bytes at dst that the kernel gives us to
            // rewrite for the call; the driver merges pieces only when adjacent,
            // so no two segments share a byte.
            Piece::InPlace(unsafe { std::slice::from_raw_parts_mut(seg.dst, len) })
        } else {
            // SAFETY: len bytes to read at src and to write at dst, which the
            // driver checked do not overlap (it sends overlapping ones to the
            // generic code); distinct segments are distinct bytes.
            unsafe {
                Piece::Copy {
                    src: std::slice::from_raw_parts(seg.src, len),
                    dst: std::slice::from_raw_parts_mut(seg.dst, len),
                }
            }
        };
    }
    match key.crypt(encrypt != 0, iv, &aad[..aad_n], &mut data[..data_n], tag) {
        Ok(()) => 0,
        Err(e) => -e.errno(),
    }
}

/// The data's destinations as one range (start, length) when each follows the
/// previous: then the message is sealed or opened there in one pass, after its
/// out-of-place sources are copied in. A TLS 1.3 record is that case on
/// transmit (the plaintext already in the record's pages, its one-byte content
/// type elsewhere), and so is a TLS 1.2 record opened into the caller's buffer.
fn one_destination(segs: &[knic_crypt_seg]) -> Option<(*mut u8, usize)> {
    let first = segs.first()?;
    let mut len = 0usize;
    for seg in segs {
        if seg.dst != first.dst.wrapping_add(len) {
            return None;
        }
        len += seg.len as usize;
    }
    Some((first.dst, len))
}
