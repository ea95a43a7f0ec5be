//! Every cipher of the kernel's TLS ULP (Linux 6.12: AES-GCM-128/256, AES-CCM-128,
//! ChaCha20-Poly1305, SM4-GCM/CCM, ARIA-GCM-128/256), with TLS 1.2 and 1.3: records the
//! library kernel seals open under an independent record layer (`common::tls_record`,
//! RustCrypto's AEADs), records that layer seals open in the kernel, byte for byte; a
//! flipped bit is the kernel's EBADMSG; ARIA with TLS 1.3 is refused (EINVAL) as Linux
//! refuses it. Every algorithm passed the crypto manager's self-test at boot.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a failed unwrap is a failed test; results are reported on stdout

mod common;

use std::io::{Read, Write};
use std::thread;

use common::tls_record::{APPLICATION_DATA, RecordLayer, kernel, loopback_pair};
use lkl_netstack::tls::{KtlsStream, TlsError, TlsVersion, TrafficCipher, TrafficKeys};

fn ciphers() -> Vec<TrafficCipher> {
    let nonce = [0x1d, 0x2c, 0x3b, 0x4a, 5, 6, 7, 8, 9, 10, 11, 12];
    vec![
        TrafficCipher::AesGcm128 {
            key: [0x11; 16],
            nonce,
        },
        TrafficCipher::AesGcm256 {
            key: [0x22; 32],
            nonce,
        },
        TrafficCipher::AesCcm128 {
            key: [0x33; 16],
            nonce,
        },
        TrafficCipher::Chacha20Poly1305 {
            key: [0x44; 32],
            nonce,
        },
        TrafficCipher::Sm4Gcm {
            key: [0x55; 16],
            nonce,
        },
        TrafficCipher::Sm4Ccm {
            key: [0x66; 16],
            nonce,
        },
        TrafficCipher::AriaGcm128 {
            key: [0x77; 16],
            nonce,
        },
        TrafficCipher::AriaGcm256 {
            key: [0x88; 32],
            nonce,
        },
    ]
}

fn tls13_allowed(cipher: &TrafficCipher) -> bool {
    !matches!(
        cipher,
        TrafficCipher::AriaGcm128 { .. } | TrafficCipher::AriaGcm256 { .. }
    )
}

fn keys(cipher: &TrafficCipher, version: TlsVersion) -> TrafficKeys {
    TrafficKeys {
        version,
        cipher: cipher.clone(),
        sequence: 0,
    }
}

fn pattern(len: usize, salt: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(salt) >> 13) as u8)
        .collect()
}

/// Plaintext sizes: one byte, odd sizes, a full 16 KiB record, and more than one record.
const SIZES: [usize; 5] = [1, 777, 4096, 16384, 40_000];

fn each_cipher_and_version(mut f: impl FnMut(&TrafficCipher, TlsVersion)) {
    let mut ran = 0;
    for cipher in ciphers() {
        for version in [TlsVersion::Tls12, TlsVersion::Tls13] {
            if version == TlsVersion::Tls13 && !tls13_allowed(&cipher) {
                continue;
            }
            f(&cipher, version);
            println!("{} {:?}: ok", cipher.name(), version);
            ran += 1;
        }
    }
    assert_eq!(ran, 14, "8 ciphers with TLS 1.2, 6 of them with TLS 1.3");
}

#[test]
fn records_the_kernel_seals_open_under_the_reference() {
    each_cipher_and_version(|cipher, version| {
        let (tls, raw) = loopback_pair();
        let tls = KtlsStream::install(tls, &keys(cipher, version), &keys(cipher, version))
            .unwrap_or_else(|e| panic!("{} {version:?}: {e}", cipher.name()));
        assert_eq!(tls.cipher(), cipher.name());
        let mut reference = RecordLayer::new(cipher.clone(), version);
        let sent: Vec<u8> = SIZES
            .iter()
            .enumerate()
            .flat_map(|(i, &n)| pattern(n, i as u32))
            .collect();
        thread::scope(|s| {
            s.spawn(|| {
                for (i, &n) in SIZES.iter().enumerate() {
                    tls.send_all(&pattern(n, i as u32)).unwrap();
                }
            });
            let mut got = Vec::new();
            while got.len() < sent.len() {
                let (content_type, plain) = reference.read(&raw);
                assert_eq!(content_type, APPLICATION_DATA, "{}", cipher.name());
                assert!(plain.len() <= 16384, "a record over 2^14 bytes");
                got.extend_from_slice(&plain);
            }
            assert!(
                got == sent,
                "{} {version:?}: the plaintext differs",
                cipher.name()
            );
        });
    });
}

#[test]
fn records_the_reference_seals_open_in_the_kernel() {
    each_cipher_and_version(|cipher, version| {
        let (mut raw, tls) = loopback_pair();
        let mut tls = KtlsStream::install(tls, &keys(cipher, version), &keys(cipher, version))
            .unwrap_or_else(|e| panic!("{} {version:?}: {e}", cipher.name()));
        let mut reference = RecordLayer::new(cipher.clone(), version);
        for (i, &n) in SIZES.iter().enumerate() {
            let plain = pattern(n.min(16384), i as u32);
            raw.write_all(&reference.seal(&plain)).unwrap();
            let mut got = vec![0u8; plain.len()];
            tls.read_exact(&mut got).unwrap();
            assert!(
                got == plain,
                "{} {version:?}: a {}-byte record opened differently",
                cipher.name(),
                plain.len()
            );
        }
        // A flipped ciphertext bit: the kernel's AEAD refuses the record.
        let mut forged = reference.seal(b"forged");
        let last = forged.len() - 1;
        forged[last] ^= 1;
        raw.write_all(&forged).unwrap();
        let err = tls.recv(&mut [0u8; 64]).unwrap_err();
        assert!(
            matches!(err, TlsError::BadRecordMac),
            "{} {version:?}: {err:?}",
            cipher.name()
        );
    });
}

#[test]
fn aria_with_tls_1_3_is_refused_as_linux_refuses_it() {
    for cipher in ciphers().iter().filter(|c| !tls13_allowed(c)) {
        let (tls, _raw) = loopback_pair();
        let keys = keys(cipher, TlsVersion::Tls13);
        match KtlsStream::install(tls, &keys, &keys) {
            Err(TlsError::Keys { source, .. }) => {
                assert_eq!(
                    source.raw_os_error(),
                    Some(libc::EINVAL),
                    "{}",
                    cipher.name()
                );
            }
            Err(e) => panic!("{}: {e:?}", cipher.name()),
            Ok(_) => panic!("{} with TLS 1.3 was accepted", cipher.name()),
        }
    }
}

/// The kernel builds a template instance (`ccm(aes)`, ...) when a socket first asks for
/// it, and the crypto manager tests it before anyone may use it: once every cipher was
/// installed, each TLS algorithm is in `/proc/crypto` with `selftest: passed`.
#[test]
fn every_tls_algorithm_passed_its_self_test() {
    for cipher in ciphers() {
        let (tls, _raw) = loopback_pair();
        let k = keys(&cipher, TlsVersion::Tls12);
        KtlsStream::install(tls, &k, &k).unwrap();
    }
    let text = kernel().read_file("/proc/crypto").unwrap();
    for name in [
        "gcm(aes)",
        "ccm(aes)",
        "rfc7539(chacha20,poly1305)",
        "gcm(sm4)",
        "ccm(sm4)",
        "gcm(aria)",
    ] {
        let named = |block: &&str| {
            block.lines().any(|l| {
                l.split_once(':')
                    .is_some_and(|(k, v)| k.trim() == "name" && v.trim() == name)
            })
        };
        let blocks: Vec<&str> = text.split("\n\n").filter(named).collect();
        assert!(
            !blocks.is_empty(),
            "{name} is not in the kernel's /proc/crypto"
        );
        for b in blocks {
            assert!(b.contains("selftest     : passed"), "{name}:\n{b}");
        }
    }
}
