//! Traffic keys in the kernel's `SOL_TLS` layout (`include/uapi/linux/tls.h`).
//!
//! The kernel takes one `struct tls12_crypto_info_*` per direction, for TLS 1.2 and
//! 1.3 alike. For the GCM and CCM ciphers (AES, SM4, ARIA): version, cipher, the
//! 8-byte IV, the key, the 4-byte salt and the 8-byte big-endian record sequence
//! number; a TLS AEAD nonce is 12 bytes, its first four the salt and the rest the
//! IV. ChaCha20-Poly1305 has no salt: its 12-byte IV is the whole nonce.

use std::fmt;

/// `SOL_TLS`: the socket level of the kernel TLS options.
pub(crate) const SOL_TLS: i32 = 282;
/// `TLS_TX` / `TLS_RX`: the option names that install keys per direction.
pub(crate) const TLS_TX: i32 = 1;
pub(crate) const TLS_RX: i32 = 2;
/// Control-message types for records other than application data.
pub(crate) const TLS_SET_RECORD_TYPE: i32 = 1;
pub(crate) const TLS_GET_RECORD_TYPE: i32 = 2;

const TLS_CIPHER_AES_GCM_128: u16 = 51;
const TLS_CIPHER_AES_GCM_256: u16 = 52;
const TLS_CIPHER_AES_CCM_128: u16 = 53;
const TLS_CIPHER_CHACHA20_POLY1305: u16 = 54;
const TLS_CIPHER_SM4_GCM: u16 = 55;
const TLS_CIPHER_SM4_CCM: u16 = 56;
const TLS_CIPHER_ARIA_GCM_128: u16 = 57;
const TLS_CIPHER_ARIA_GCM_256: u16 = 58;
const SALT_LEN: usize = 4;
const NONCE_LEN: usize = 12;

/// The protocol version a connection negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    fn wire(self) -> u16 {
        match self {
            TlsVersion::Tls12 => 0x0303,
            TlsVersion::Tls13 => 0x0304,
        }
    }
}

/// The AEAD a connection negotiated, with its key and 12-byte nonce base.
#[derive(Clone, PartialEq, Eq)]
pub enum TrafficCipher {
    AesGcm128 {
        key: [u8; 16],
        nonce: [u8; NONCE_LEN],
    },
    AesGcm256 {
        key: [u8; 32],
        nonce: [u8; NONCE_LEN],
    },
    AesCcm128 {
        key: [u8; 16],
        nonce: [u8; NONCE_LEN],
    },
    Chacha20Poly1305 {
        key: [u8; 32],
        nonce: [u8; NONCE_LEN],
    },
    Sm4Gcm {
        key: [u8; 16],
        nonce: [u8; NONCE_LEN],
    },
    Sm4Ccm {
        key: [u8; 16],
        nonce: [u8; NONCE_LEN],
    },
    /// TLS 1.2 only (the kernel refuses it with 1.3: EINVAL).
    AriaGcm128 {
        key: [u8; 16],
        nonce: [u8; NONCE_LEN],
    },
    /// TLS 1.2 only (the kernel refuses it with 1.3: EINVAL).
    AriaGcm256 {
        key: [u8; 32],
        nonce: [u8; NONCE_LEN],
    },
}

// Key material never reaches logs.
impl fmt::Debug for TrafficCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl TrafficCipher {
    /// The IANA-style name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            TrafficCipher::AesGcm128 { .. } => "AES-128-GCM",
            TrafficCipher::AesGcm256 { .. } => "AES-256-GCM",
            TrafficCipher::AesCcm128 { .. } => "AES-128-CCM",
            TrafficCipher::Chacha20Poly1305 { .. } => "CHACHA20-POLY1305",
            TrafficCipher::Sm4Gcm { .. } => "SM4-GCM",
            TrafficCipher::Sm4Ccm { .. } => "SM4-CCM",
            TrafficCipher::AriaGcm128 { .. } => "ARIA-128-GCM",
            TrafficCipher::AriaGcm256 { .. } => "ARIA-256-GCM",
        }
    }

    /// The 12-byte nonce base (salt and IV; ChaCha20's IV).
    pub fn nonce(&self) -> &[u8; NONCE_LEN] {
        self.parts().2
    }

    fn parts(&self) -> (u16, &[u8], &[u8; NONCE_LEN]) {
        match self {
            TrafficCipher::AesGcm128 { key, nonce } => (TLS_CIPHER_AES_GCM_128, key, nonce),
            TrafficCipher::AesGcm256 { key, nonce } => (TLS_CIPHER_AES_GCM_256, key, nonce),
            TrafficCipher::AesCcm128 { key, nonce } => (TLS_CIPHER_AES_CCM_128, key, nonce),
            TrafficCipher::Chacha20Poly1305 { key, nonce } => {
                (TLS_CIPHER_CHACHA20_POLY1305, key, nonce)
            }
            TrafficCipher::Sm4Gcm { key, nonce } => (TLS_CIPHER_SM4_GCM, key, nonce),
            TrafficCipher::Sm4Ccm { key, nonce } => (TLS_CIPHER_SM4_CCM, key, nonce),
            TrafficCipher::AriaGcm128 { key, nonce } => (TLS_CIPHER_ARIA_GCM_128, key, nonce),
            TrafficCipher::AriaGcm256 { key, nonce } => (TLS_CIPHER_ARIA_GCM_256, key, nonce),
        }
    }
}

/// Everything the kernel needs to carry one direction of a TLS connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficKeys {
    pub version: TlsVersion,
    pub cipher: TrafficCipher,
    /// Sequence number of the next record in this direction.
    pub sequence: u64,
}

impl TrafficKeys {
    /// The `tls12_crypto_info_*` bytes for `setsockopt(SOL_TLS, TLS_TX|TLS_RX)`.
    pub(crate) fn to_crypto_info(&self) -> CryptoInfo {
        let (cipher, key, nonce) = self.cipher.parts();
        let mut info = CryptoInfo {
            bytes: [0; CryptoInfo::MAX],
            len: 0,
        };
        // ChaCha20-Poly1305's struct has the whole nonce as its IV and no salt.
        let (salt, iv) = if cipher == TLS_CIPHER_CHACHA20_POLY1305 {
            (&[][..], &nonce[..])
        } else {
            nonce.split_at(SALT_LEN)
        };
        for field in [
            &self.version.wire().to_ne_bytes()[..],
            &cipher.to_ne_bytes(),
            iv,
            key,
            salt,
            &self.sequence.to_be_bytes(),
        ] {
            info.bytes[info.len..info.len + field.len()].copy_from_slice(field);
            info.len += field.len();
        }
        info
    }
}

/// A serialised crypto-info struct, wiped when dropped.
pub(crate) struct CryptoInfo {
    bytes: [u8; CryptoInfo::MAX],
    len: usize,
}

impl CryptoInfo {
    /// Size of `tls12_crypto_info_aes_gcm_256` (and of ChaCha20's, ARIA-256's), the largest.
    const MAX: usize = 56;

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Drop for CryptoInfo {
    fn drop(&mut self) {
        self.bytes.fill(0);
        // Keeps the wipe from being removed as a dead store.
        std::hint::black_box(&self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_gcm_128_matches_the_uapi_layout() {
        let keys = TrafficKeys {
            version: TlsVersion::Tls12,
            cipher: TrafficCipher::AesGcm128 {
                key: [0x11; 16],
                nonce: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
            },
            sequence: 0x0102_0304_0506_0708,
        };
        let info = keys.to_crypto_info();
        let b = info.as_bytes();
        assert_eq!(b.len(), 40, "sizeof(struct tls12_crypto_info_aes_gcm_128)");
        assert_eq!(&b[0..2], &0x0303u16.to_ne_bytes());
        assert_eq!(&b[2..4], &51u16.to_ne_bytes());
        assert_eq!(&b[4..12], &[5, 6, 7, 8, 9, 10, 11, 12], "iv = nonce[4..]");
        assert_eq!(&b[12..28], &[0x11; 16]);
        assert_eq!(&b[28..32], &[1, 2, 3, 4], "salt = nonce[..4]");
        assert_eq!(&b[32..40], &[1, 2, 3, 4, 5, 6, 7, 8], "rec_seq big-endian");
    }

    #[test]
    fn aes_gcm_256_matches_the_uapi_layout() {
        let keys = TrafficKeys {
            version: TlsVersion::Tls13,
            cipher: TrafficCipher::AesGcm256 {
                key: [0x22; 32],
                nonce: [9; 12],
            },
            sequence: 3,
        };
        let info = keys.to_crypto_info();
        let b = info.as_bytes();
        assert_eq!(b.len(), 56, "sizeof(struct tls12_crypto_info_aes_gcm_256)");
        assert_eq!(&b[0..2], &0x0304u16.to_ne_bytes());
        assert_eq!(&b[2..4], &52u16.to_ne_bytes());
        assert_eq!(&b[12..44], &[0x22; 32]);
        assert_eq!(&b[48..56], &3u64.to_be_bytes());
    }

    #[test]
    fn chacha20_poly1305_has_a_12_byte_iv_and_no_salt() {
        let keys = TrafficKeys {
            version: TlsVersion::Tls13,
            cipher: TrafficCipher::Chacha20Poly1305 {
                key: [0x33; 32],
                nonce: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
            },
            sequence: 7,
        };
        let info = keys.to_crypto_info();
        let b = info.as_bytes();
        assert_eq!(
            b.len(),
            56,
            "sizeof(struct tls12_crypto_info_chacha20_poly1305)"
        );
        assert_eq!(&b[2..4], &54u16.to_ne_bytes());
        assert_eq!(
            &b[4..16],
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
            "iv = nonce"
        );
        assert_eq!(&b[16..48], &[0x33; 32]);
        assert_eq!(&b[48..56], &7u64.to_be_bytes());
    }

    #[test]
    fn every_cipher_has_the_size_its_uapi_struct_has() {
        let n = [0u8; 12];
        for (cipher, id, size) in [
            (
                TrafficCipher::AesCcm128 {
                    key: [0; 16],
                    nonce: n,
                },
                53u16,
                40,
            ),
            (
                TrafficCipher::Sm4Gcm {
                    key: [0; 16],
                    nonce: n,
                },
                55,
                40,
            ),
            (
                TrafficCipher::Sm4Ccm {
                    key: [0; 16],
                    nonce: n,
                },
                56,
                40,
            ),
            (
                TrafficCipher::AriaGcm128 {
                    key: [0; 16],
                    nonce: n,
                },
                57,
                40,
            ),
            (
                TrafficCipher::AriaGcm256 {
                    key: [0; 32],
                    nonce: n,
                },
                58,
                56,
            ),
        ] {
            let keys = TrafficKeys {
                version: TlsVersion::Tls12,
                cipher,
                sequence: 0,
            };
            let info = keys.to_crypto_info();
            assert_eq!(info.as_bytes().len(), size, "{}", keys.cipher.name());
            assert_eq!(&info.as_bytes()[2..4], &id.to_ne_bytes());
        }
    }

    #[test]
    fn debug_output_hides_the_key() {
        let cipher = TrafficCipher::AesGcm128 {
            key: [0xab; 16],
            nonce: [0; 12],
        };
        assert_eq!(format!("{cipher:?}"), "AES-128-GCM");
    }
}
