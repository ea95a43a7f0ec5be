//! An independent TLS record layer, to check the kernel's against: RFC 5246 §6.2.3.3
//! (TLS 1.2 AEAD records, an 8-byte explicit nonce after the header), RFC 7905 §2
//! (ChaCha20-Poly1305 in TLS 1.2: no explicit nonce, the sequence number XORed into the
//! IV) and RFC 8446 §5.2 (TLS 1.3: inner content type, the header as AAD), over
//! RustCrypto's AEADs for every cipher the kernel's TLS ULP has. None of it is the
//! kernel's code, so a record both accept was sealed right.

use std::io::Read;

use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm};
use lkl_netstack::tls::{TlsVersion, TrafficCipher};
use lkl_netstack::{BootConfig, Kernel, TcpListener, TcpStream};

/// The test binary's kernel for TLS tests: booted once, default configuration.
pub fn kernel() -> &'static Kernel {
    static KERNEL: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
    KERNEL.get_or_init(|| Kernel::boot(&BootConfig::default()).unwrap())
}

/// A connected TCP pair (client, server) over that kernel's loopback.
pub fn loopback_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind(kernel(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let client = TcpStream::connect(kernel(), listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

pub const APPLICATION_DATA: u8 = 23;
pub const HEADER_LEN: usize = 5;
pub const TAG_LEN: usize = 16;
const EXPLICIT_NONCE_LEN: usize = 8;

/// One direction of a connection: its cipher, version and next sequence number.
pub struct RecordLayer {
    pub cipher: TrafficCipher,
    pub version: TlsVersion,
    pub sequence: u64,
}

impl RecordLayer {
    pub fn new(cipher: TrafficCipher, version: TlsVersion) -> RecordLayer {
        RecordLayer {
            cipher,
            version,
            sequence: 0,
        }
    }

    /// TLS 1.2 GCM and CCM records carry the nonce's last 8 bytes.
    fn explicit_nonce(&self) -> bool {
        self.version == TlsVersion::Tls12
            && !matches!(self.cipher, TrafficCipher::Chacha20Poly1305 { .. })
    }

    /// This record's nonce. With an explicit nonce the sender picks its last 8 bytes;
    /// this layer counts them up from the IV, as Linux does.
    fn nonce(&self) -> [u8; 12] {
        let mut n = *self.cipher.nonce();
        if self.explicit_nonce() {
            let iv = u64::from_be_bytes(n[4..].try_into().unwrap()).wrapping_add(self.sequence);
            n[4..].copy_from_slice(&iv.to_be_bytes());
        } else {
            for (b, s) in n[4..].iter_mut().zip(self.sequence.to_be_bytes()) {
                *b ^= s;
            }
        }
        n
    }

    fn aead(
        &self,
        seal: bool,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<(), aes_gcm::aead::Error> {
        macro_rules! run {
            ($t:ty, $key:expr) => {{
                let a = <$t>::new_from_slice($key).expect("key length");
                let n = GenericArray::from_slice(nonce);
                if seal {
                    a.encrypt_in_place(n, aad, buf)
                } else {
                    a.decrypt_in_place(n, aad, buf)
                }
            }};
        }
        match &self.cipher {
            TrafficCipher::AesGcm128 { key, .. } => run!(Aes128Gcm, key),
            TrafficCipher::AesGcm256 { key, .. } => run!(Aes256Gcm, key),
            TrafficCipher::AesCcm128 { key, .. } => run!(ccm::Ccm<aes::Aes128, U16, U12>, key),
            TrafficCipher::Chacha20Poly1305 { key, .. } => {
                run!(chacha20poly1305::ChaCha20Poly1305, key)
            }
            TrafficCipher::Sm4Gcm { key, .. } => run!(AesGcm<sm4::Sm4, U12>, key),
            TrafficCipher::Sm4Ccm { key, .. } => run!(ccm::Ccm<sm4::Sm4, U16, U12>, key),
            TrafficCipher::AriaGcm128 { key, .. } => run!(AesGcm<aria::Aria128, U12>, key),
            TrafficCipher::AriaGcm256 { key, .. } => run!(AesGcm<aria::Aria256, U12>, key),
        }
    }

    /// TLS 1.2's additional data: sequence, type, version, plaintext length.
    fn aad12(&self, content_type: u8, plain_len: usize) -> Vec<u8> {
        let mut aad = self.sequence.to_be_bytes().to_vec();
        aad.extend_from_slice(&[content_type, 3, 3]);
        aad.extend_from_slice(&(plain_len as u16).to_be_bytes());
        aad
    }

    /// One application-data record carrying `plain`.
    pub fn seal(&mut self, plain: &[u8]) -> Vec<u8> {
        let nonce = self.nonce();
        let mut body = plain.to_vec();
        let explicit = if self.explicit_nonce() {
            EXPLICIT_NONCE_LEN
        } else {
            0
        };
        let mut record = vec![APPLICATION_DATA, 3, 3];
        let aad = match self.version {
            TlsVersion::Tls13 => {
                body.push(APPLICATION_DATA);
                record.extend_from_slice(&((body.len() + TAG_LEN) as u16).to_be_bytes());
                record.clone()
            }
            TlsVersion::Tls12 => {
                let len = explicit + body.len() + TAG_LEN;
                record.extend_from_slice(&(len as u16).to_be_bytes());
                self.aad12(APPLICATION_DATA, body.len())
            }
        };
        self.aead(true, &nonce, &aad, &mut body).unwrap();
        record.extend_from_slice(&nonce[12 - explicit..]);
        record.extend_from_slice(&body);
        self.sequence += 1;
        record
    }

    /// Opens a record: its content type and plaintext, or the AEAD's refusal.
    pub fn open(
        &mut self,
        header: [u8; HEADER_LEN],
        mut body: Vec<u8>,
    ) -> Result<(u8, Vec<u8>), aes_gcm::aead::Error> {
        let mut nonce = self.nonce();
        let (content_type, aad) = match self.version {
            TlsVersion::Tls13 => (None, header.to_vec()),
            TlsVersion::Tls12 => {
                if self.explicit_nonce() {
                    if body.len() < EXPLICIT_NONCE_LEN {
                        return Err(aes_gcm::aead::Error);
                    }
                    nonce[4..].copy_from_slice(&body[..EXPLICIT_NONCE_LEN]);
                    body.drain(..EXPLICIT_NONCE_LEN);
                }
                let plain_len = body
                    .len()
                    .checked_sub(TAG_LEN)
                    .ok_or(aes_gcm::aead::Error)?;
                (Some(header[0]), self.aad12(header[0], plain_len))
            }
        };
        self.aead(false, &nonce, &aad, &mut body)?;
        self.sequence += 1;
        let content_type = match content_type {
            Some(t) => t,
            None => {
                // TLS 1.3: the inner type is the last non-zero byte.
                while body.last() == Some(&0) {
                    body.pop();
                }
                body.pop().ok_or(aes_gcm::aead::Error)?
            }
        };
        Ok((content_type, body))
    }

    /// Reads one record from `from` and opens it; panics on a record the reference
    /// cannot authenticate (the kernel sealed it wrong).
    pub fn read(&mut self, mut from: impl Read) -> (u8, Vec<u8>) {
        let mut header = [0u8; HEADER_LEN];
        from.read_exact(&mut header).unwrap();
        assert_eq!(header[1..3], [3, 3], "record version");
        let mut body = vec![0u8; usize::from(u16::from_be_bytes([header[3], header[4]]))];
        from.read_exact(&mut body).unwrap();
        let name = self.cipher.name();
        let seq = self.sequence;
        self.open(header, body).unwrap_or_else(|_| {
            panic!("record {seq} does not authenticate under the reference {name}")
        })
    }
}
