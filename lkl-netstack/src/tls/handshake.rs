//! The user-space half: a rustls handshake over a library socket, then the
//! keys handed to the kernel.

use std::io::{self, Read};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::{
    CipherSuite, ClientConfig, ClientConnection, Connection, ConnectionTrafficSecrets,
    ProtocolVersion, ServerConfig, ServerConnection,
};

use super::keys::{TlsVersion, TrafficCipher, TrafficKeys};
use super::{KtlsStream, TlsError};
use crate::TcpStream;

const RECORD_HEADER_LEN: usize = 5;

/// ring's provider with only the suites the library kernel can take over.
pub fn crypto_provider() -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.retain(|suite| {
        matches!(
            suite.suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS13_AES_256_GCM_SHA384
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
                | CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        )
    });
    provider
}

/// Runs the server side of a handshake on `tcp`, then hands the records to the kernel.
pub fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> Result<KtlsStream, TlsError> {
    if !config.enable_secret_extraction {
        return Err(TlsError::SecretExtractionDisabled);
    }
    let conn = ServerConnection::new(config)?;
    into_kernel(tcp, conn.into())
}

/// Runs the client side of a handshake on `tcp`, then hands the records to the kernel.
pub fn connect(
    tcp: TcpStream,
    config: Arc<ClientConfig>,
    server: ServerName<'static>,
) -> Result<KtlsStream, TlsError> {
    if !config.enable_secret_extraction {
        return Err(TlsError::SecretExtractionDisabled);
    }
    let conn = ClientConnection::new(config, server)?;
    into_kernel(tcp, conn.into())
}

fn into_kernel(tcp: TcpStream, mut conn: Connection) -> Result<KtlsStream, TlsError> {
    let mut records = RecordReader::new(&tcp);
    while conn.is_handshaking() || conn.wants_write() {
        if conn.wants_write() {
            conn.write_tls(&mut &tcp).map_err(TlsError::Io)?;
            continue;
        }
        if conn.read_tls(&mut records).map_err(TlsError::Io)? == 0 {
            return Err(TlsError::HandshakeEof);
        }
        if let Err(err) = conn.process_new_packets() {
            // Tell the peer why (rustls queued an alert), then give up.
            let _ = conn.write_tls(&mut &tcp);
            return Err(err.into());
        }
    }
    let mut early = Vec::new();
    match conn.reader().read_to_end(&mut early) {
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
        Err(err) => return Err(TlsError::Io(err)),
    }
    let version = match conn.protocol_version() {
        Some(ProtocolVersion::TLSv1_2) => TlsVersion::Tls12,
        Some(ProtocolVersion::TLSv1_3) => TlsVersion::Tls13,
        other => return Err(TlsError::UnsupportedCipher(format!("{other:?}"))),
    };
    let secrets = conn.dangerous_extract_secrets()?;
    let tx = traffic_keys(version, secrets.tx)?;
    let rx = traffic_keys(version, secrets.rx)?;
    Ok(KtlsStream::install(tcp, &tx, &rx)?.with_early_plaintext(early))
}

fn traffic_keys(
    version: TlsVersion,
    (sequence, secrets): (u64, ConnectionTrafficSecrets),
) -> Result<TrafficKeys, TlsError> {
    let cipher = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => TrafficCipher::AesGcm128 {
            key: fixed(key.as_ref())?,
            nonce: fixed(iv.as_ref())?,
        },
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => TrafficCipher::AesGcm256 {
            key: fixed(key.as_ref())?,
            nonce: fixed(iv.as_ref())?,
        },
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => TrafficCipher::Chacha20Poly1305 {
            key: fixed(key.as_ref())?,
            nonce: fixed(iv.as_ref())?,
        },
        _ => {
            return Err(TlsError::UnsupportedCipher(
                "an AEAD without kTLS support".into(),
            ));
        }
    };
    Ok(TrafficKeys {
        version,
        cipher,
        sequence,
    })
}

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], TlsError> {
    bytes
        .try_into()
        .map_err(|_| TlsError::UnsupportedCipher(format!("a {}-byte key or IV", bytes.len())))
}

/// Reads a TLS byte stream without ever going past the end of a record, so that
/// when the handshake ends every later record is still in the socket for the kernel.
struct RecordReader<'a> {
    tcp: &'a TcpStream,
    header: [u8; RECORD_HEADER_LEN],
    header_read: usize,
    body_left: usize,
}

impl<'a> RecordReader<'a> {
    fn new(tcp: &'a TcpStream) -> RecordReader<'a> {
        RecordReader {
            tcp,
            header: [0; RECORD_HEADER_LEN],
            header_read: 0,
            body_left: 0,
        }
    }
}

impl Read for RecordReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let in_header = self.body_left == 0;
        let limit = if in_header {
            RECORD_HEADER_LEN - self.header_read
        } else {
            self.body_left
        };
        let want = buf.len().min(limit);
        let n = self.tcp.read(&mut buf[..want])?;
        if in_header {
            self.header[self.header_read..self.header_read + n].copy_from_slice(&buf[..n]);
            self.header_read += n;
            if self.header_read == RECORD_HEADER_LEN {
                self.header_read = 0;
                self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
            }
        } else {
            self.body_left -= n;
        }
        Ok(n)
    }
}
