//! AES-GCM (NIST SP 800-38D) over a message in pieces, with a key expanded once.
//!
//! A message whose data is one contiguous piece goes to ring's AES-GCM, which
//! interleaves AES and GHASH in one pass over the bytes where they lie (the
//! caller makes that case out of a record whose destination is contiguous).
//! A message in several pieces of at most a TLS record is gathered into a
//! buffer on the stack for the same one pass and scattered back; a longer one is
//! streamed: AES-CTR (RustCrypto `aes` + `ctr`, AES-NI) and GHASH (`ghash`)
//! over each piece as it comes, the partial block carried across pieces.
//! The gathering is there because RustCrypto's GHASH multiplies one block at a
//! time: on the benchmark machine it hashed 0.2 GB/s where ring sealed 3.6 GB/s
//! under the same load. Nothing here allocates.
#![deny(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use aes::cipher::consts::U16;
use aes::cipher::generic_array::GenericArray;
use aes::cipher::{
    BlockCipher, BlockEncrypt, BlockSizeUser, InnerIvInit, KeyInit, StreamCipher,
    StreamCipherCoreWrapper,
};
use aes::{Aes128, Aes256};
use ghash::GHash;
use ghash::universal_hash::UniversalHash;
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};

pub(crate) const TAG_LEN: usize = 16;
pub(crate) const IV_LEN: usize = 12;
const BLOCK: usize = 16;
/// Longest AAD that is gathered onto the stack for the one-pass path (TLS: 13).
const AAD_GATHER: usize = 64;
/// Most data gathered onto the stack for the one pass: a TLS record's
/// ciphertext (16 KiB, the TLS 1.3 content type and padding, the tag's room).
const GATHER: usize = 17 << 10;
/// GCM's limit on the data of one message: 2^32 - 2 blocks.
const MAX_DATA: u64 = ((1 << 32) - 2) * BLOCK as u64;

/// What a crypt failed on; the kernel sees an errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum GcmError {
    #[error("the key is neither 16 nor 32 bytes")]
    KeyLength,
    #[error("the message is over GCM's length limit")]
    TooLong,
    #[error("the tag does not match")]
    BadTag,
}

impl GcmError {
    pub(crate) fn errno(self) -> i32 {
        match self {
            GcmError::KeyLength | GcmError::TooLong => libc::EINVAL,
            GcmError::BadTag => libc::EBADMSG,
        }
    }
}

/// How many messages took each path, and how many keys are alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostCryptoCounters {
    /// Keys expanded and not yet released (transforms holding a host key).
    pub keys_live: u64,
    /// Messages whose data was one piece: ring's one-pass AES-GCM.
    pub one_piece: u64,
    /// Messages in several pieces of at most a TLS record: gathered for the
    /// one pass on the stack and scattered back.
    pub gathered: u64,
    /// Longer messages in several pieces: streamed over them.
    pub streamed: u64,
}

static KEYS_LIVE: AtomicU64 = AtomicU64::new(0);
static ONE_PIECE: AtomicU64 = AtomicU64::new(0);
static GATHERED: AtomicU64 = AtomicU64::new(0);
static STREAMED: AtomicU64 = AtomicU64::new(0);

/// The process's host AES-GCM counters (all library kernels' transforms).
pub fn host_crypto_counters() -> HostCryptoCounters {
    HostCryptoCounters {
        keys_live: KEYS_LIVE.load(Ordering::Relaxed),
        one_piece: ONE_PIECE.load(Ordering::Relaxed),
        gathered: GATHERED.load(Ordering::Relaxed),
        streamed: STREAMED.load(Ordering::Relaxed),
    }
}

/// One piece of data: transformed where it lies, or read from `src` into `dst`
/// (same length, not overlapping).
pub(crate) enum Piece<'a> {
    InPlace(&'a mut [u8]),
    Copy { src: &'a [u8], dst: &'a mut [u8] },
}

impl Piece<'_> {
    fn len(&self) -> usize {
        self.source().len()
    }

    fn source(&self) -> &[u8] {
        match self {
            Piece::InPlace(buf) => buf,
            Piece::Copy { src, .. } => src,
        }
    }

    fn destination(&mut self) -> &mut [u8] {
        match self {
            Piece::InPlace(buf) => buf,
            Piece::Copy { dst, .. } => dst,
        }
    }
}

// One per transform, boxed whole by the FFI layer; a box per variant would add
// a pointer chase per message.
#[allow(clippy::large_enum_variant)]
enum Cipher {
    Aes128(Aes128),
    Aes256(Aes256),
}

/// One key, expanded for both paths; read-only, so any threads may share it.
pub(crate) struct GcmKey {
    one_pass: LessSafeKey,
    cipher: Cipher,
    /// The GHASH key, E(K, 0^128).
    h: [u8; BLOCK],
}

impl GcmKey {
    pub(crate) fn new(key: &[u8]) -> Result<GcmKey, GcmError> {
        let (algorithm, cipher) = match key.len() {
            16 => (
                &AES_128_GCM,
                Cipher::Aes128(Aes128::new(GenericArray::from_slice(key))),
            ),
            32 => (
                &AES_256_GCM,
                Cipher::Aes256(Aes256::new(GenericArray::from_slice(key))),
            ),
            _ => return Err(GcmError::KeyLength),
        };
        let one_pass =
            LessSafeKey::new(UnboundKey::new(algorithm, key).map_err(|_| GcmError::KeyLength)?);
        let mut h = GenericArray::from([0u8; BLOCK]);
        match &cipher {
            Cipher::Aes128(c) => c.encrypt_block(&mut h),
            Cipher::Aes256(c) => c.encrypt_block(&mut h),
        }
        KEYS_LIVE.fetch_add(1, Ordering::Relaxed);
        Ok(GcmKey {
            one_pass,
            cipher,
            h: h.into(),
        })
    }

    /// Seals (`encrypt`: writes `tag`) or opens (checks `tag`) one message: the
    /// AAD in `aad` pieces, the data in `data` pieces, in order.
    pub(crate) fn crypt<'a>(
        &self,
        encrypt: bool,
        iv: &[u8; IV_LEN],
        aad: &[&[u8]],
        data: &mut [Piece<'a>],
        tag: &mut [u8; TAG_LEN],
    ) -> Result<(), GcmError> {
        let data_len: u64 = data.iter().map(|p| p.len() as u64).sum();
        if data_len > MAX_DATA {
            return Err(GcmError::TooLong);
        }
        let aad_len: usize = aad.iter().map(|a| a.len()).sum();
        let aad_fits = aad.len() <= 1 || aad_len <= AAD_GATHER;
        if let [piece] = data {
            if aad_fits {
                ONE_PIECE.fetch_add(1, Ordering::Relaxed);
                return self.one_pass(encrypt, iv, aad, aad_len, piece, tag);
            }
        }
        if aad_fits && data_len <= GATHER as u64 && !data.is_empty() {
            GATHERED.fetch_add(1, Ordering::Relaxed);
            return self.gathered(encrypt, iv, aad, aad_len, data, data_len as usize, tag);
        }
        STREAMED.fetch_add(1, Ordering::Relaxed);
        match &self.cipher {
            Cipher::Aes128(c) => stream(c, &self.h, encrypt, iv, aad, data, tag),
            Cipher::Aes256(c) => stream(c, &self.h, encrypt, iv, aad, data, tag),
        }
    }

    /// The pieces' sources gathered on the stack, one pass, the result
    /// scattered to their destinations (not after a failed open).
    #[allow(clippy::too_many_arguments)] // one message's parts, passed through
    fn gathered(
        &self,
        encrypt: bool,
        iv: &[u8; IV_LEN],
        aad: &[&[u8]],
        aad_len: usize,
        data: &mut [Piece<'_>],
        data_len: usize,
        tag: &mut [u8; TAG_LEN],
    ) -> Result<(), GcmError> {
        let mut scratch = [0u8; GATHER];
        let buf = &mut scratch[..data_len];
        let mut at = 0;
        for piece in data.iter() {
            let src = piece.source();
            buf[at..at + src.len()].copy_from_slice(src);
            at += src.len();
        }
        self.one_pass(encrypt, iv, aad, aad_len, &mut Piece::InPlace(buf), tag)?;
        let mut at = 0;
        for piece in data.iter_mut() {
            let dst = piece.destination();
            let len = dst.len();
            dst.copy_from_slice(&scratch[at..at + len]);
            at += len;
        }
        Ok(())
    }

    fn one_pass(
        &self,
        encrypt: bool,
        iv: &[u8; IV_LEN],
        aad: &[&[u8]],
        aad_len: usize,
        piece: &mut Piece<'_>,
        tag: &mut [u8; TAG_LEN],
    ) -> Result<(), GcmError> {
        let mut gathered = [0u8; AAD_GATHER];
        let aad = match aad {
            [] => &[][..],
            [one] => one,
            many => {
                let mut at = 0;
                for a in many {
                    gathered[at..at + a.len()].copy_from_slice(a);
                    at += a.len();
                }
                &gathered[..aad_len]
            }
        };
        let buf: &mut [u8] = match piece {
            Piece::InPlace(buf) => buf,
            Piece::Copy { src, dst } => {
                dst.copy_from_slice(src);
                dst
            }
        };
        let nonce = Nonce::assume_unique_for_key(*iv);
        if encrypt {
            let sealed = self
                .one_pass
                .seal_in_place_separate_tag(nonce, Aad::from(aad), buf)
                .map_err(|_| GcmError::TooLong)?;
            tag.copy_from_slice(sealed.as_ref());
            Ok(())
        } else {
            self.one_pass
                .open_in_place_separate_tag(nonce, Aad::from(aad), Tag::from(*tag), buf, 0..)
                .map(|_| ())
                .map_err(|_| GcmError::BadTag)
        }
    }
}

impl Drop for GcmKey {
    fn drop(&mut self) {
        KEYS_LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// GHASH fed with byte strings of any length; `pad` ends a section (AAD).
struct Hasher {
    ghash: GHash,
    partial: [u8; BLOCK],
    filled: usize,
}

impl Hasher {
    fn update(&mut self, mut bytes: &[u8]) {
        if self.filled > 0 {
            let take = (BLOCK - self.filled).min(bytes.len());
            self.partial[self.filled..self.filled + take].copy_from_slice(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled < BLOCK {
                return;
            }
            self.ghash.update(&[self.partial.into()]);
            self.filled = 0;
        }
        let whole = bytes.len() / BLOCK * BLOCK;
        // Whole blocks: padding adds nothing.
        self.ghash.update_padded(&bytes[..whole]);
        let rest = &bytes[whole..];
        self.partial[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
    }

    fn pad(&mut self) {
        if self.filled > 0 {
            self.partial[self.filled..].fill(0);
            self.ghash.update(&[self.partial.into()]);
            self.filled = 0;
        }
    }
}

/// GCM from its parts: counter mode from J0 + 1, GHASH over the padded AAD and
/// ciphertext and their bit lengths, the tag that GHASH xor E(K, J0).
fn stream<C>(
    cipher: &C,
    h: &[u8; BLOCK],
    encrypt: bool,
    iv: &[u8; IV_LEN],
    aad: &[&[u8]],
    data: &mut [Piece<'_>],
    tag: &mut [u8; TAG_LEN],
) -> Result<(), GcmError>
where
    C: BlockCipher + BlockEncrypt + BlockSizeUser<BlockSize = U16>,
{
    let mut counter = [0u8; BLOCK];
    counter[..IV_LEN].copy_from_slice(iv);
    counter[BLOCK - 1] = 1;
    let mut j0 = GenericArray::from(counter);
    cipher.encrypt_block(&mut j0);
    counter[BLOCK - 1] = 2;
    let mut ctr = StreamCipherCoreWrapper::from_core(
        ctr::CtrCore::<&C, ctr::flavors::Ctr32BE>::inner_iv_init(cipher, &counter.into()),
    );
    let mut hasher = Hasher {
        ghash: GHash::new(h.into()),
        partial: [0; BLOCK],
        filled: 0,
    };
    let mut aad_len = 0u64;
    for a in aad {
        hasher.update(a);
        aad_len += a.len() as u64;
    }
    hasher.pad();
    let mut data_len = 0u64;
    for piece in data.iter_mut() {
        data_len += piece.len() as u64;
        // GHASH runs over the ciphertext: after sealing, before opening.
        match piece {
            Piece::InPlace(buf) => {
                if !encrypt {
                    hasher.update(buf);
                }
                ctr.apply_keystream(buf);
                if encrypt {
                    hasher.update(buf);
                }
            }
            Piece::Copy { src, dst } => {
                if !encrypt {
                    hasher.update(src);
                }
                ctr.apply_keystream_b2b(src, dst)
                    .map_err(|_| GcmError::TooLong)?;
                if encrypt {
                    hasher.update(dst);
                }
            }
        }
    }
    hasher.pad();
    let mut lengths = [0u8; BLOCK];
    lengths[..8].copy_from_slice(&(aad_len * 8).to_be_bytes());
    lengths[8..].copy_from_slice(&(data_len * 8).to_be_bytes());
    hasher.ghash.update(&[lengths.into()]);
    let mut expected = [0u8; TAG_LEN];
    for ((e, s), k) in expected
        .iter_mut()
        .zip(hasher.ghash.finalize().iter())
        .zip(j0.iter())
    {
        *e = s ^ k;
    }
    if encrypt {
        *tag = expected;
        Ok(())
    } else if expected
        .iter()
        .zip(tag.iter())
        .fold(0, |d, (e, t)| d | (e ^ t))
        == 0
    {
        // Every byte compared, whatever the first difference.
        Ok(())
    } else {
        Err(GcmError::BadTag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::AeadInPlace;

    /// The GCM specification's test case 2 (McGrew & Viega): zero key, zero IV,
    /// one zero block; both paths.
    #[test]
    fn matches_the_gcm_specification() {
        let key = GcmKey::new(&[0; 16]).unwrap();
        let want_ct = [
            0x03, 0x88, 0xda, 0xce, 0x60, 0xb6, 0xa3, 0x92, 0xf3, 0x28, 0xc2, 0xb9, 0x71, 0xb2,
            0xfe, 0x78,
        ];
        let want_tag = [
            0xab, 0x6e, 0x47, 0xd4, 0x2c, 0xec, 0x13, 0xbd, 0xf5, 0x3a, 0x67, 0xb2, 0x12, 0x57,
            0xbd, 0xdf,
        ];
        let mut data = [0u8; 16];
        let mut tag = [0u8; TAG_LEN];
        key.crypt(
            true,
            &[0; 12],
            &[],
            &mut [Piece::InPlace(&mut data)],
            &mut tag,
        )
        .unwrap();
        assert_eq!((data, tag), (want_ct, want_tag));
        let (mut a, mut b) = ([0u8; 7], [0u8; 9]);
        let mut tag = [0u8; TAG_LEN];
        key.crypt(
            true,
            &[0; 12],
            &[],
            &mut [Piece::InPlace(&mut a), Piece::InPlace(&mut b)],
            &mut tag,
        )
        .unwrap();
        assert_eq!([&a[..], &b[..]].concat(), want_ct);
        assert_eq!(tag, want_tag);
    }

    /// Pieces of odd sizes, AAD in pieces, in place and copied, both key sizes,
    /// gathered (a record's size) and streamed (longer): the same ciphertext and
    /// tag as RustCrypto's one-shot AES-GCM, and back.
    #[test]
    fn pieces_of_odd_sizes_match_an_independent_aes_gcm() {
        for len in [5000, 3 * GATHER as u32 + 5] {
            pieces_match(len);
        }
    }

    fn pieces_match(len: u32) {
        let plain: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let aad: Vec<u8> = (0..29u8).collect();
        let iv = [9u8; 12];
        for key_bytes in [&[0x11u8; 16][..], &[0x22u8; 32][..]] {
            let (want, want_tag) = {
                let mut buf = plain.clone();
                let tag = if key_bytes.len() == 16 {
                    aes_gcm::Aes128Gcm::new_from_slice(key_bytes)
                        .unwrap()
                        .encrypt_in_place_detached((&iv).into(), &aad, &mut buf)
                        .unwrap()
                } else {
                    aes_gcm::Aes256Gcm::new_from_slice(key_bytes)
                        .unwrap()
                        .encrypt_in_place_detached((&iv).into(), &aad, &mut buf)
                        .unwrap()
                };
                (buf, <[u8; 16]>::from(tag))
            };
            let key = GcmKey::new(key_bytes).unwrap();
            for cuts in [
                &[][..],
                &[1usize, 15, 16, 17, 333, 4095],
                &[4999],
                &[2500, 2501, 20_000, 20_017, 40_000],
            ] {
                let aad_pieces = [&aad[..3], &aad[3..20], &aad[20..]];
                // Sealed: out of place from `plain` into `out`, every other piece in place.
                let mut out = plain.clone();
                let mut tag = [0u8; TAG_LEN];
                let mut pieces = split(&plain, &mut out, cuts);
                key.crypt(true, &iv, &aad_pieces, &mut pieces, &mut tag)
                    .unwrap();
                assert_eq!(out, want, "cuts {cuts:?}");
                assert_eq!(tag, want_tag);
                let sealed = out.clone();
                let mut pieces = split(&sealed, &mut out, cuts);
                key.crypt(false, &iv, &aad_pieces, &mut pieces, &mut tag)
                    .unwrap();
                assert_eq!(out, plain);
                tag[15] ^= 0x80;
                let mut again = sealed.clone();
                let mut pieces = split(&sealed, &mut again, cuts);
                assert_eq!(
                    key.crypt(false, &iv, &aad_pieces, &mut pieces, &mut tag),
                    Err(GcmError::BadTag)
                );
            }
        }
    }

    /// `out` cut at `cuts`: even-numbered pieces read from `src`, the others in
    /// place (holding the same bytes as `src`).
    fn split<'a>(src: &'a [u8], out: &'a mut [u8], cuts: &[usize]) -> Vec<Piece<'a>> {
        out.copy_from_slice(src);
        let total = src.len();
        let mut pieces = Vec::new();
        let (mut src, mut out) = (src, out);
        let mut at = 0;
        for (i, &cut) in cuts.iter().chain([&total]).enumerate() {
            let len = cut.min(total).saturating_sub(at);
            let (s, s_rest) = src.split_at(len);
            let (o, o_rest) = std::mem::take(&mut out).split_at_mut(len);
            pieces.push(if i % 2 == 0 {
                Piece::Copy { src: s, dst: o }
            } else {
                Piece::InPlace(o)
            });
            (src, out) = (s_rest, o_rest);
            at += len;
        }
        pieces
    }

    #[test]
    fn other_key_sizes_are_refused() {
        assert!(matches!(GcmKey::new(&[0; 24]), Err(GcmError::KeyLength)));
    }
}
