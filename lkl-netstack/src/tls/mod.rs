//! Kernel TLS: the handshake in user space (rustls), the records in the kernel.
//!
//! rustls runs the handshake over a library TCP socket, reading exactly one
//! record at a time so nothing after the handshake is left in its buffers; then
//! the traffic secrets and sequence numbers go to the kernel's `tls` ULP
//! (`setsockopt(SOL_TLS, TLS_TX/TLS_RX)`) and the connection carries on as a
//! [`KtlsStream`]. TLS 1.2 and 1.3 with every cipher of the kernel's TLS ULP
//! ([`TrafficCipher`]); a handshake negotiates AES-GCM-128/256 or ChaCha20-Poly1305, the
//! ones rustls has, and configs built on [`crypto_provider`] offer only those.

mod control;
mod handshake;
mod keys;
mod record;
mod stream;

use std::io;

pub use handshake::{accept, connect, crypto_provider};
pub use keys::{TlsVersion, TrafficCipher, TrafficKeys};
pub use stream::KtlsStream;

/// Why a TLS connection could not be set up or carried on.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS handshake failed: {0}")]
    Handshake(#[from] rustls::Error),
    #[error("the peer closed the connection during the TLS handshake")]
    HandshakeEof,
    #[error(
        "the rustls config does not allow secret extraction; set \
         `enable_secret_extraction = true` so the keys can go to the kernel"
    )]
    SecretExtractionDisabled,
    #[error(
        "the peers agreed on {0}, which the kernel here cannot run; offer only \
         AES-GCM and ChaCha20-Poly1305 suites (build the config on lkl_netstack::tls::crypto_provider())"
    )]
    UnsupportedCipher(String),
    #[error("transmit and receive keys are for different TLS versions")]
    MismatchedKeys,
    #[error("the kernel refused the `tls` ULP ({0}); is CONFIG_TLS built in?")]
    Ulp(#[source] io::Error),
    #[error("the kernel refused the {direction} keys for {cipher}: {source}")]
    Keys {
        direction: &'static str,
        cipher: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "a received record failed authentication (bad MAC): it was altered, or the \
         peers disagree on keys or sequence numbers; the connection is unusable"
    )]
    BadRecordMac,
    #[error("a received record is longer than TLS allows; the connection is unusable")]
    RecordOverflow,
    #[error(
        "a received record has a malformed header (version or type); the connection is unusable"
    )]
    BadRecord,
    #[error("the peer sent the fatal alert {description:?}")]
    Alert {
        description: rustls::AlertDescription,
    },
    #[error("the peer sent a TLS 1.3 KeyUpdate, which this kernel's TLS cannot follow")]
    KeyUpdate,
    #[error("the peer sent an unexpected post-handshake message (type {0})")]
    UnexpectedHandshake(u8),
    #[error("the peer sent a record of unexpected content type {0}")]
    UnexpectedRecord(u8),
    #[error("the peer sent a control message larger than 64 KiB")]
    ControlTooLarge,
    #[error(transparent)]
    Io(io::Error),
}

impl TlsError {
    /// Names the kernel's record-layer errors of a receive; other errors stay
    /// I/O errors (on a send, EINVAL or EMSGSIZE say nothing about the peer).
    fn from_receive(err: io::Error) -> TlsError {
        match err.raw_os_error() {
            Some(libc::EBADMSG) => TlsError::BadRecordMac,
            Some(libc::EMSGSIZE) => TlsError::RecordOverflow,
            Some(libc::EINVAL) => TlsError::BadRecord,
            _ => TlsError::Io(err),
        }
    }
}

impl From<TlsError> for io::Error {
    fn from(err: TlsError) -> io::Error {
        match err {
            TlsError::Io(err) => err,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}
