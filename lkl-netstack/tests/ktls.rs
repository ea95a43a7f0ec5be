//! Kernel TLS inside the library, both ends in one kernel over loopback: rustls
//! handshakes for TLS 1.2 and 1.3 with AES-GCM-128 and -256, then the kernel's
//! `tls` ULP carries the data (send, recv, sendfile of a host file), and broken
//! records surface as named errors.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a failed unwrap is a failed test; results are reported on stdout

mod common;

use std::io::{Read, Write};
use std::thread;

use common::pki::{TestPki, client_config, server_config};
use common::tls_record::{kernel, loopback_pair};
use lkl_netstack::tls::{self, KtlsStream, TlsError, TlsVersion, TrafficCipher, TrafficKeys};
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CipherSuite, SupportedProtocolVersion};

const CASES: [(&SupportedProtocolVersion, CipherSuite, TlsVersion, &str); 4] = [
    (
        &rustls::version::TLS12,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TlsVersion::Tls12,
        "AES-128-GCM",
    ),
    (
        &rustls::version::TLS12,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TlsVersion::Tls12,
        "AES-256-GCM",
    ),
    (
        &rustls::version::TLS13,
        CipherSuite::TLS13_AES_128_GCM_SHA256,
        TlsVersion::Tls13,
        "AES-128-GCM",
    ),
    (
        &rustls::version::TLS13,
        CipherSuite::TLS13_AES_256_GCM_SHA384,
        TlsVersion::Tls13,
        "AES-256-GCM",
    ),
];

#[test]
fn handshakes_hand_both_directions_to_the_kernel() {
    let pki = TestPki::new(&["knic.test"]);
    let upload = common::pattern(3 << 20);
    let host_file = std::env::temp_dir().join(format!("knic-ktls-{}", std::process::id()));
    let download = common::pattern(5 << 20 | 12345);
    std::fs::write(&host_file, &download).unwrap();
    let len = kernel().import_file(&host_file, "/download").unwrap();
    std::fs::remove_file(&host_file).unwrap();
    assert_eq!(len, download.len() as u64);

    for (version, suite, expect_version, expect_cipher) in CASES {
        let (client_tcp, server_tcp) = loopback_pair();
        let server_cfg = server_config(&pki, &[version], Some(suite));
        let client_cfg = client_config(&pki, &[version], Some(suite));
        thread::scope(|s| {
            let server = s.spawn(|| {
                let mut tls = tls::accept(server_tcp, server_cfg).unwrap();
                assert_eq!(
                    (tls.version(), tls.cipher()),
                    (expect_version, expect_cipher)
                );
                let mut got = vec![0u8; upload.len()];
                tls.read_exact(&mut got).unwrap();
                assert!(got == upload, "{suite:?}: upload differs");
                let file = kernel().open_file("/download").unwrap();
                let mut offset = 0i64;
                while (offset as usize) < download.len() {
                    let rest = download.len() - offset as usize;
                    tls.send_file(&file, &mut offset, rest).unwrap();
                }
                tls.close_notify().unwrap();
                // The client's close_notify ends our reading cleanly.
                assert_eq!(tls.recv(&mut [0u8; 16]).unwrap(), 0);
            });
            let server_name = ServerName::try_from("knic.test").unwrap();
            let mut tls = tls::connect(client_tcp, client_cfg, server_name).unwrap();
            assert_eq!(
                (tls.version(), tls.cipher()),
                (expect_version, expect_cipher)
            );
            tls.write_all(&upload).unwrap();
            let mut got = Vec::new();
            tls.read_to_end(&mut got).unwrap();
            assert_eq!(got.len(), download.len(), "{suite:?}: download length");
            assert!(got == download, "{suite:?}: download differs");
            tls.close_notify().unwrap();
            server.join().unwrap();
        });
        println!(
            "{suite:?}: {} MiB up, {} MiB down, verified",
            upload.len() >> 20,
            download.len() >> 20
        );
    }
}

/// Both ends of a TCP connection with kernel TLS installed from fixed keys.
fn fixed_key_pair(client_key: [u8; 16], server_rx_key: [u8; 16]) -> (KtlsStream, KtlsStream) {
    let (a, b) = loopback_pair();
    let keys = |key| TrafficKeys {
        version: TlsVersion::Tls13,
        cipher: TrafficCipher::AesGcm128 {
            key,
            nonce: [7; 12],
        },
        sequence: 0,
    };
    let a = KtlsStream::install(a, &keys(client_key), &keys([2; 16])).unwrap();
    let b = KtlsStream::install(b, &keys([2; 16]), &keys(server_rx_key)).unwrap();
    (a, b)
}

#[test]
fn a_record_with_a_bad_mac_is_a_named_error() {
    let (a, mut b) = fixed_key_pair([1; 16], [9; 16]);
    a.send_all(b"forged").unwrap();
    let err = b.recv(&mut [0u8; 64]).unwrap_err();
    assert!(matches!(err, TlsError::BadRecordMac), "{err:?}");
    assert!(err.to_string().contains("bad MAC"), "{err}");
}

#[test]
fn matching_fixed_keys_carry_data() {
    // The control for the test above: same set-up, agreeing keys.
    let (a, mut b) = fixed_key_pair([1; 16], [1; 16]);
    a.send_all(b"genuine").unwrap();
    let mut buf = [0u8; 64];
    let n = b.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"genuine");
}

#[test]
fn oversized_and_malformed_records_are_named_errors() {
    let keys = TrafficKeys {
        version: TlsVersion::Tls12,
        cipher: TrafficCipher::AesGcm256 {
            key: [3; 32],
            nonce: [4; 12],
        },
        sequence: 0,
    };
    for (header, want) in [
        // Application data claiming 18433 bytes: over 2^14 + overhead.
        ([23u8, 3, 3, 0x48, 0x01], "overflow"),
        // Record version 3.1 where TLS 1.2 requires 3.3.
        ([23u8, 3, 1, 0, 40], "bad record"),
    ] {
        let (mut plain, tcp) = loopback_pair();
        let mut tls = KtlsStream::install(tcp, &keys, &keys).unwrap();
        plain.write_all(&header).unwrap();
        plain.write_all(&[0u8; 40]).unwrap();
        let err = tls.recv(&mut [0u8; 64]).unwrap_err();
        let ok = match want {
            "overflow" => matches!(err, TlsError::RecordOverflow),
            _ => matches!(err, TlsError::BadRecord),
        };
        assert!(ok, "header {header:?}: wanted {want}, got {err:?}");
    }
}

#[test]
fn a_fatal_alert_from_the_peer_is_reported() {
    let (a, mut b) = fixed_key_pair([1; 16], [1; 16]);
    a.send_all(b"before").unwrap();
    a.abort(AlertDescription::AccessDenied).unwrap();
    let mut buf = [0u8; 64];
    let n = b.recv(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        b"before",
        "data ahead of the alert still arrives"
    );
    let err = b.recv(&mut buf).unwrap_err();
    assert!(
        matches!(
            err,
            TlsError::Alert {
                description: AlertDescription::AccessDenied
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_config_without_secret_extraction_is_refused_with_advice() {
    let pki = TestPki::new(&["knic.test"]);
    let mut config = (*server_config(&pki, &[&rustls::version::TLS13], None)).clone();
    config.enable_secret_extraction = false;
    let (_client, server) = loopback_pair();
    let err = tls::accept(server, config.into()).unwrap_err();
    assert!(matches!(err, TlsError::SecretExtractionDisabled), "{err:?}");
    assert!(
        err.to_string().contains("enable_secret_extraction"),
        "{err}"
    );
}

#[test]
fn a_peer_that_hangs_up_mid_handshake_is_reported() {
    let pki = TestPki::new(&["knic.test"]);
    let (client, server) = loopback_pair();
    drop(client);
    let err = tls::accept(
        server,
        server_config(&pki, &[&rustls::version::TLS13], None),
    )
    .unwrap_err();
    assert!(matches!(err, TlsError::HandshakeEof), "{err:?}");
}

#[test]
fn the_kernels_aes_gcm_runs_in_host_code_and_passed_its_self_tests() {
    let crypto = kernel().read_file("/proc/crypto").unwrap();
    let ours = crypto
        .split("\n\n")
        .find(|block| block.contains("gcm-aes-knic-host"))
        .unwrap_or_else(|| panic!("no host gcm(aes) in /proc/crypto:\n{crypto}"));
    for line in [
        "name         : gcm(aes)",
        "selftest     : passed",
        "priority     : 400",
    ] {
        assert!(ours.contains(line), "missing `{line}` in:\n{ours}");
    }
}
