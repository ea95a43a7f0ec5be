//! Kernel TLS in the library against peers nobody here wrote, through a TAP:
//! host `curl` (plain HTTP and HTTPS) and `openssl s_client` fetch a file from an
//! HTTP responder on library sockets, whose body goes out with sendfile through
//! kTLS; a kTLS client in the library fetches a file from host `openssl
//! s_server`. TLS 1.2 and 1.3, AES-GCM-128 and -256 and ChaCha20-Poly1305, content
//! compared byte for byte. Needs root, curl and openssl (deploy/dev/setup-debian.sh).
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a failed unwrap is a failed test; results are reported on stdout

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::http::{self, Docroot};
use common::pki::{TestPki, client_config, server_config};
use common::run;
use common::tap_net::TapNet;
use lkl_netstack::tls::{self, TlsVersion};
use lkl_netstack::{Offloads, TcpListener, TcpStream};
use rustls::CipherSuite;
use rustls::pki_types::ServerName;

/// (name, OpenSSL's TLS 1.2 cipher or 1.3 suite, rustls suite, kernel's view).
const CASES: [(&str, &str, CipherSuite, TlsVersion, &str); 6] = [
    (
        "1.2",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TlsVersion::Tls12,
        "AES-128-GCM",
    ),
    (
        "1.2",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TlsVersion::Tls12,
        "AES-256-GCM",
    ),
    (
        "1.3",
        "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_128_GCM_SHA256,
        TlsVersion::Tls13,
        "AES-128-GCM",
    ),
    (
        "1.3",
        "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_AES_256_GCM_SHA384,
        TlsVersion::Tls13,
        "AES-256-GCM",
    ),
    (
        "1.2",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        TlsVersion::Tls12,
        "CHACHA20-POLY1305",
    ),
    (
        "1.3",
        "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        TlsVersion::Tls13,
        "CHACHA20-POLY1305",
    ),
];

const BLOB_LEN: usize = 4 << 20 | 777;

fn versions(name: &str) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static TLS12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    static TLS13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match name {
        "1.2" => &TLS12,
        _ => &TLS13,
    }
}

fn openssl_cipher_flags(version: &str, cipher: &str) -> String {
    match version {
        "1.2" => format!("-tls1_2 -cipher {cipher}"),
        _ => format!("-tls1_3 -ciphersuites {cipher}"),
    }
}

#[test]
fn ktls_interoperates_with_curl_and_openssl() {
    let net = TapNet::up(232, Offloads::Tso);
    let dir = tempdir();
    let pki = TestPki::new(&["knic.test", &net.lib_ip, &net.host_ip]);
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(dir.join("server.pem"), &pki.server_pem).unwrap();
    std::fs::write(dir.join("server.key"), &pki.server_key_pem).unwrap();

    // The file served from the library: a host file imported into its ramfs.
    let blob = common::pattern(BLOB_LEN);
    std::fs::write(dir.join("blob"), &blob).unwrap();
    let len = net.kernel.import_file(&dir.join("blob"), "/blob").unwrap();
    let docroot = Docroot(vec![("/blob".into(), "/blob".into(), len)]);

    plain_http_with_curl(&net, &docroot, &dir, &blob);
    let listener =
        TcpListener::bind(&net.kernel, format!("{}:8443", net.lib_ip).parse().unwrap()).unwrap();
    for (version, cipher, suite, kernel_version, kernel_cipher) in CASES {
        let config = server_config(&pki, versions(version), Some(suite));
        for client in ["curl", "s_client"] {
            let command = match client {
                "curl" => net.in_netns(&format!(
                    "curl -sS --fail --max-time 60 --cacert {} --tlsv{version} --tls-max {version} {} \
                     https://{}:8443/blob -o {}",
                    ca.display(),
                    match version {
                        "1.2" => format!("--ciphers {cipher}"),
                        _ => format!("--tls13-ciphers {cipher}"),
                    },
                    net.lib_ip,
                    dir.join("got").display(),
                )),
                _ => net.in_netns(&format!(
                    "sh -c \"printf 'GET /blob HTTP/1.1\\r\\nHost: knic\\r\\n\\r\\n' | \
                     timeout 60 openssl s_client -quiet -connect {}:8443 {} -CAfile {} \
                     -verify_return_error -verify_ip {} > {}\"",
                    net.lib_ip,
                    openssl_cipher_flags(version, cipher),
                    ca.display(),
                    net.lib_ip,
                    dir.join("got").display(),
                )),
            };
            let _ = std::fs::remove_file(dir.join("got"));
            thread::scope(|s| {
                let server = s.spawn(|| {
                    let (tcp, _) = listener.accept().unwrap();
                    let mut conn = tls::accept(tcp, config.clone()).unwrap();
                    let negotiated = (conn.version(), conn.cipher());
                    http::respond(&mut conn, &net.kernel, &docroot).unwrap();
                    conn.close_notify().unwrap();
                    negotiated
                });
                run(&command);
                let negotiated = server.join().unwrap();
                assert_eq!(
                    negotiated,
                    (kernel_version, kernel_cipher),
                    "{client} {cipher}"
                );
            });
            let got = std::fs::read(dir.join("got")).unwrap();
            let body = match client {
                "curl" => &got[..],
                _ => http::body_of(&got).1,
            };
            assert_eq!(
                body.len(),
                blob.len(),
                "{client} TLS {version} {cipher}: length"
            );
            assert!(
                body == blob,
                "{client} TLS {version} {cipher}: content differs"
            );
            println!(
                "{client} TLS {version} {cipher}: {} bytes verified",
                body.len()
            );
        }
        library_client_against_s_server(&net, &pki, &dir, &blob, version, cipher, suite);
        println!("library client vs s_server TLS {version} {cipher}: verified");
    }
}

fn plain_http_with_curl(net: &TapNet, docroot: &Docroot, dir: &Path, blob: &[u8]) {
    let listener =
        TcpListener::bind(&net.kernel, format!("{}:8080", net.lib_ip).parse().unwrap()).unwrap();
    thread::scope(|s| {
        let server = s.spawn(|| {
            for _ in 0..2 {
                let (mut conn, _) = listener.accept().unwrap();
                http::respond(&mut conn, &net.kernel, docroot).unwrap();
            }
        });
        run(&net.in_netns(&format!(
            "curl -sS --fail --max-time 60 http://{}:8080/blob -o {}",
            net.lib_ip,
            dir.join("plain").display()
        )));
        let status = Command::new("sh")
            .arg("-c")
            .arg(net.in_netns(&format!(
                "curl -s --max-time 60 -o /dev/null -w '%{{http_code}}' http://{}:8080/missing",
                net.lib_ip
            )))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&status.stdout), "404");
        server.join().unwrap();
    });
    assert!(
        std::fs::read(dir.join("plain")).unwrap() == blob,
        "plain HTTP content differs"
    );
    println!("curl plain HTTP: {} bytes verified", blob.len());
}

fn library_client_against_s_server(
    net: &TapNet,
    pki: &TestPki,
    dir: &Path,
    blob: &[u8],
    version: &str,
    cipher: &str,
    suite: CipherSuite,
) {
    let mut server = Command::new("sh")
        .arg("-c")
        .arg(net.in_netns(&format!(
            "timeout 60 openssl s_server -quiet -naccept 1 -accept 4433 -cert server.pem -key server.key -WWW {}",
            openssl_cipher_flags(version, cipher)
        )))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("{}:4433", net.host_ip).parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let tcp = loop {
        match TcpStream::connect(&net.kernel, addr) {
            Ok(tcp) => break tcp,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            Err(err) => panic!("openssl s_server did not listen: {err}"),
        }
    };
    let config = client_config(pki, versions(version), Some(suite));
    let name = ServerName::try_from(net.host_ip.clone()).unwrap();
    let mut conn = tls::connect(tcp, config, name).unwrap();
    conn.write_all(b"GET /blob HTTP/1.0\r\n\r\n").unwrap();
    let mut got = Vec::new();
    conn.read_to_end(&mut got).unwrap();
    let (head, body) = http::body_of(&got);
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert_eq!(
        body.len(),
        blob.len(),
        "s_server TLS {version} {cipher}: length"
    );
    assert!(
        body == blob,
        "s_server TLS {version} {cipher}: content differs"
    );
    // s_server -naccept 1 exits once we close our side.
    conn.close_notify().unwrap();
    drop(conn);
    assert!(server.wait().unwrap().success(), "openssl s_server failed");
}

/// A fresh directory under /tmp for this process's files.
fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("knic-ktls-interop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
