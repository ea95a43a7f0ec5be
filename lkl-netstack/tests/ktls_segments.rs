//! The host AES-GCM driver on records that lie in many pieces, against an
//! independent AES-GCM (RustCrypto's `aes-gcm`), and under sixteen connections
//! at once: no corruption, and every host key released (counted).

#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a failed unwrap is a failed test; results are reported on stdout

mod common;

use std::io::{Read, Write};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::tls_record::{APPLICATION_DATA, RecordLayer, kernel, loopback_pair};
use lkl_netstack::host_crypto_counters;
use lkl_netstack::tls::{KtlsStream, TlsVersion, TrafficCipher, TrafficKeys};

/// The tests here count host keys and paths: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn keys(cipher: &TrafficCipher) -> TrafficKeys {
    TrafficKeys {
        version: TlsVersion::Tls13,
        cipher: cipher.clone(),
        sequence: 0,
    }
}

fn ciphers() -> [TrafficCipher; 2] {
    [
        TrafficCipher::AesGcm128 {
            key: [0x5a; 16],
            nonce: [3; 12],
        },
        TrafficCipher::AesGcm256 {
            key: [0xa5; 32],
            nonce: [4; 12],
        },
    ]
}

fn pattern(len: usize, salt: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(salt) >> 13) as u8)
        .collect()
}

/// Records the reference sealed, written in pieces of odd sizes with no delay:
/// each reaches the kernel in many small packets, so the driver sees its
/// ciphertext in many scatterlist pieces at odd offsets. The plaintext comes out
/// of kTLS byte for byte.
#[test]
fn records_in_many_pieces_open_in_the_kernel_like_the_reference_seals_them() {
    let _serial = serial();
    for cipher in ciphers() {
        let pieces = || {
            let c = host_crypto_counters();
            c.gathered + c.streamed
        };
        let pieces_before = pieces();
        let (raw, tls) = loopback_pair();
        raw.set_nodelay(true).unwrap();
        let mut tls = KtlsStream::install(tls, &keys(&cipher), &keys(&cipher)).unwrap();
        let mut reference = RecordLayer::new(cipher.clone(), TlsVersion::Tls13);
        let sizes = [1usize, 17, 4095, 16384, 333, 9000, 16383];
        let plain: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| pattern(n, i as u32))
            .collect();
        thread::scope(|s| {
            s.spawn(|| {
                let mut raw = &raw;
                for p in &plain {
                    let record = reference.seal(p);
                    for (i, piece) in record.chunks(13 + 97 * (p.len() % 5)).enumerate() {
                        raw.write_all(piece).unwrap();
                        if i % 7 == 0 {
                            thread::sleep(Duration::from_micros(50));
                        }
                    }
                }
            });
            for p in &plain {
                let mut got = vec![0u8; p.len()];
                tls.read_exact(&mut got).unwrap();
                assert!(got == *p, "record of {} bytes opened differently", p.len());
            }
        });
        assert!(
            pieces() > pieces_before,
            "no record reached the host in several pieces: the test did not test that path"
        );
    }
}

/// The kernel seals records whose plaintext it takes from page-cache pages
/// (sendfile) and from writes of odd sizes; the reference opens every one.
#[test]
fn records_the_kernel_seals_from_pieces_open_with_the_reference() {
    let _serial = serial();
    let content = pattern(300_001, 99);
    kernel().write_file("/segments-served", &content).unwrap();
    for cipher in ciphers() {
        let (tls, raw) = loopback_pair();
        let tls = KtlsStream::install(tls, &keys(&cipher), &keys(&cipher)).unwrap();
        let mut reference = RecordLayer::new(cipher.clone(), TlsVersion::Tls13);
        let written = pattern(50_003, 7);
        thread::scope(|s| {
            s.spawn(|| {
                let file = kernel().open_file("/segments-served").unwrap();
                // Start at an odd offset into the first page.
                let mut offset = 3i64;
                while (offset as usize) < content.len() {
                    let rest = content.len() - offset as usize;
                    assert!(tls.send_file(&file, &mut offset, rest).unwrap() > 0);
                }
                for piece in written.chunks(1 + 4099) {
                    tls.send_all(piece).unwrap();
                }
                tls.tcp().shutdown(std::net::Shutdown::Write).unwrap();
            });
            let mut got = Vec::new();
            while got.len() < content.len() - 3 + written.len() {
                let (content_type, plain) = reference.read(&raw);
                assert_eq!(content_type, APPLICATION_DATA, "inner content type");
                got.extend(plain);
            }
            assert!(
                got[..content.len() - 3] == content[3..],
                "the sent file came out differently"
            );
            assert!(
                got[content.len() - 3..] == written[..],
                "the written bytes came out differently"
            );
        });
    }
}

/// Sixteen kTLS connections (both directions, both key sizes) at once through
/// one library kernel for a bounded time: every byte arrives as sent, and when
/// they close, every host key they made is released.
#[test]
fn sixteen_connections_at_once_corrupt_nothing_and_release_every_key() {
    let _serial = serial();
    const CONNECTIONS: usize = 16;
    const CHUNK: usize = 40_000;
    let keys_before = host_crypto_counters().keys_live;
    let deadline = Instant::now() + Duration::from_secs(8);
    let moved: Vec<usize> = thread::scope(|s| {
        let workers: Vec<_> = (0..CONNECTIONS)
            .map(|c| {
                s.spawn(move || {
                    let cipher = &ciphers()[c % 2];
                    let (a, b) = loopback_pair();
                    let sender = KtlsStream::install(a, &keys(cipher), &keys(cipher)).unwrap();
                    let mut receiver =
                        KtlsStream::install(b, &keys(cipher), &keys(cipher)).unwrap();
                    let mut total = 0;
                    let mut round = 0u32;
                    while Instant::now() < deadline {
                        let data = pattern(CHUNK + c * 101, round ^ (c as u32) << 20);
                        thread::scope(|s| {
                            s.spawn(|| sender.send_all(&data).unwrap());
                            let mut got = vec![0u8; data.len()];
                            receiver.read_exact(&mut got).unwrap();
                            assert!(got == data, "connection {c} round {round} corrupted");
                        });
                        total += data.len();
                        round += 1;
                    }
                    total
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert!(
        moved.iter().all(|&n| n > 0),
        "a connection moved nothing: {moved:?}"
    );
    println!(
        "16 kTLS connections moved {} MB in 8 s",
        moved.iter().sum::<usize>() >> 20
    );
    // Closing frees the transforms; the kernel may finish that after close().
    let until = Instant::now() + Duration::from_secs(10);
    while host_crypto_counters().keys_live > keys_before && Instant::now() < until {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        host_crypto_counters().keys_live,
        keys_before,
        "host AES-GCM keys outlived their connections"
    );
}
