//! The `aes_gcm` host operation: the kernel's "gcm(aes)" (kernel TLS) computed
//! with ring, which uses the CPU's AES and carry-less multiply instructions. The
//! kernel side (arch/knic/crypto/host_gcm.c) gathers each request into one buffer.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_uint, c_ulong};

use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, Tag, UnboundKey};

const TAG_LEN: usize = 16;

/// Seals or opens `data` in place; see `aes_gcm` in host_ops.h.
pub(crate) unsafe extern "C" fn aes_gcm(
    encrypt: c_int,
    key: *const u8,
    key_len: c_uint,
    iv: *const u8,
    aad: *const u8,
    aad_len: c_uint,
    data: *mut u8,
    data_len: c_ulong,
    tag: *mut u8,
) -> c_int {
    // SAFETY: the kernel passes a key of key_len bytes, a 12-byte IV, aad_len bytes
    // of AAD, data_len bytes of data and a 16-byte tag, all valid for the call and
    // with data and tag not overlapping the rest.
    let (key, iv, aad, data, tag) = unsafe {
        (
            std::slice::from_raw_parts(key, key_len as usize),
            &*iv.cast::<[u8; NONCE_LEN]>(),
            std::slice::from_raw_parts(aad, aad_len as usize),
            std::slice::from_raw_parts_mut(data, data_len as usize),
            &mut *tag.cast::<[u8; TAG_LEN]>(),
        )
    };
    match crypt(encrypt != 0, key, iv, aad, data, tag) {
        Ok(()) => 0,
        Err(errno) => -errno,
    }
}

fn crypt(
    encrypt: bool,
    key: &[u8],
    iv: &[u8; NONCE_LEN],
    aad: &[u8],
    data: &mut [u8],
    tag: &mut [u8; TAG_LEN],
) -> Result<(), c_int> {
    let algorithm = match key.len() {
        16 => &AES_128_GCM,
        32 => &AES_256_GCM,
        _ => return Err(libc::EINVAL),
    };
    let key = LessSafeKey::new(UnboundKey::new(algorithm, key).map_err(|_| libc::EINVAL)?);
    let nonce = Nonce::assume_unique_for_key(*iv);
    if encrypt {
        let sealed = key
            .seal_in_place_separate_tag(nonce, Aad::from(aad), data)
            .map_err(|_| libc::EINVAL)?;
        tag.copy_from_slice(sealed.as_ref());
    } else {
        key.open_in_place_separate_tag(nonce, Aad::from(aad), Tag::from(*tag), data, 0..)
            .map_err(|_| libc::EBADMSG)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 16] = [0x42; 16];
    const IV: [u8; 12] = [0x24; 12];

    /// The GCM specification's test case 2 (McGrew & Viega): zero key, zero IV,
    /// one zero block.
    #[test]
    fn matches_the_gcm_specification() {
        let mut data = [0u8; 16];
        let mut tag = [0u8; TAG_LEN];
        crypt(true, &[0; 16], &[0; 12], b"", &mut data, &mut tag).unwrap();
        assert_eq!(
            data,
            [
                0x03, 0x88, 0xda, 0xce, 0x60, 0xb6, 0xa3, 0x92, 0xf3, 0x28, 0xc2, 0xb9, 0x71, 0xb2,
                0xfe, 0x78
            ]
        );
        assert_eq!(
            tag,
            [
                0xab, 0x6e, 0x47, 0xd4, 0x2c, 0xec, 0x13, 0xbd, 0xf5, 0x3a, 0x67, 0xb2, 0x12, 0x57,
                0xbd, 0xdf
            ]
        );
    }

    #[test]
    fn seals_and_opens_in_place() {
        let plain: Vec<u8> = (0..100u8).collect();
        let mut data = plain.clone();
        let mut tag = [0u8; TAG_LEN];
        crypt(true, &KEY, &IV, b"header", &mut data, &mut tag).unwrap();
        assert_ne!(data, plain);
        crypt(false, &KEY, &IV, b"header", &mut data, &mut tag).unwrap();
        assert_eq!(data, plain);
    }

    #[test]
    fn a_wrong_tag_or_aad_is_ebadmsg() {
        let mut data = vec![1u8; 64];
        let mut tag = [0u8; TAG_LEN];
        crypt(true, &KEY, &IV, b"aad", &mut data, &mut tag).unwrap();
        let mut forged = data.clone();
        assert_eq!(
            crypt(false, &KEY, &IV, b"aaX", &mut forged, &mut tag),
            Err(libc::EBADMSG)
        );
        tag[0] ^= 1;
        assert_eq!(
            crypt(false, &KEY, &IV, b"aad", &mut data, &mut tag),
            Err(libc::EBADMSG)
        );
    }

    #[test]
    fn other_key_sizes_are_einval() {
        let mut tag = [0u8; TAG_LEN];
        assert_eq!(
            crypt(true, &[0; 24], &IV, b"", &mut [], &mut tag),
            Err(libc::EINVAL)
        );
    }
}
