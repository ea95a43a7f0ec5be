//! A TCP connection whose records the kernel encrypts and decrypts.

use std::io::{self, Read, Write};

use super::TlsError;
use super::keys::{SOL_TLS, TLS_RX, TLS_TX, TlsVersion, TrafficKeys};
use super::record::{self, CONTENT_ALERT, CONTENT_APPLICATION_DATA, CONTENT_HANDSHAKE};
use crate::user_memory::UserBuffer;
use crate::{Fd, TcpStream};

const TCP_ULP: i32 = 31;
const ALERT_CLOSE_NOTIFY: u8 = 0;
const ALERT_LEVEL_WARNING: u8 = 1;
const ALERT_LEVEL_FATAL: u8 = 2;
const HANDSHAKE_NEW_SESSION_TICKET: u8 = 4;
const HANDSHAKE_KEY_UPDATE: u8 = 24;
/// A peer may not make us hold more than this of one control message.
const CONTROL_LIMIT: usize = 1 << 16;
/// Room for a few whole records per receive.
const LANDING_LEN: usize = 64 << 10;

/// A TLS connection after the handshake: the kernel's TLS ULP owns the record
/// layer, so `send`, `recv` and `sendfile` move plaintext and the kernel does the
/// AES-GCM and framing.
#[derive(Debug)]
pub struct KtlsStream {
    tcp: TcpStream,
    version: TlsVersion,
    cipher: &'static str,
    /// Plaintext that arrived with the handshake, before the kernel took over.
    early: Vec<u8>,
    early_read: usize,
    /// Bytes of a control message (alert, post-handshake message) not yet whole.
    control: Vec<u8>,
    control_type: u8,
    peer_closed: bool,
    /// Where TLS 1.2 records are received: the kernel decrypts them in place
    /// there (zero copy), which it cannot do into host memory.
    landing: Option<UserBuffer>,
}

impl KtlsStream {
    /// Attaches the `tls` ULP to `tcp` and installs the keys of both directions.
    ///
    /// The caller did the handshake and owns the record sequence numbers in the
    /// keys: the next record the kernel sends or expects has that number.
    pub fn install(
        tcp: TcpStream,
        tx: &TrafficKeys,
        rx: &TrafficKeys,
    ) -> Result<KtlsStream, TlsError> {
        if tx.version != rx.version {
            return Err(TlsError::MismatchedKeys);
        }
        tcp.set_option(libc::IPPROTO_TCP, TCP_ULP, b"tls")
            .map_err(TlsError::Ulp)?;
        tcp.set_option(SOL_TLS, TLS_TX, tx.to_crypto_info().as_bytes())
            .map_err(|source| TlsError::Keys {
                direction: "transmit",
                cipher: tx.cipher.name(),
                source,
            })?;
        tcp.set_option(SOL_TLS, TLS_RX, rx.to_crypto_info().as_bytes())
            .map_err(|source| TlsError::Keys {
                direction: "receive",
                cipher: rx.cipher.name(),
                source,
            })?;
        Ok(KtlsStream {
            tcp,
            version: tx.version,
            cipher: tx.cipher.name(),
            early: Vec::new(),
            early_read: 0,
            control: Vec::new(),
            control_type: 0,
            peer_closed: false,
            landing: match rx.version {
                TlsVersion::Tls12 => Some(UserBuffer::map(LANDING_LEN).map_err(TlsError::Io)?),
                // TLS 1.3 decrypts in place only with TLS_RX_EXPECT_NO_PAD.
                TlsVersion::Tls13 => None,
            },
        })
    }

    /// Plaintext the handshake already decrypted; `recv` returns it first.
    pub(crate) fn with_early_plaintext(mut self, early: Vec<u8>) -> KtlsStream {
        self.early = early;
        self
    }

    pub fn version(&self) -> TlsVersion {
        self.version
    }

    /// The AEAD's name, e.g. "AES-256-GCM".
    pub fn cipher(&self) -> &'static str {
        self.cipher
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Sends application data; the kernel cuts it into records.
    pub fn send(&self, data: &[u8]) -> Result<usize, TlsError> {
        (&self.tcp).write(data).map_err(TlsError::from_kernel)
    }

    /// Sends every byte of `data`.
    pub fn send_all(&self, mut data: &[u8]) -> Result<(), TlsError> {
        while !data.is_empty() {
            let n = self.send(data)?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Sends `count` bytes of a library file from `offset`, encrypted in the
    /// kernel without passing through this process (sendfile(2)).
    pub fn send_file(&self, file: &Fd, offset: &mut i64, count: usize) -> Result<usize, TlsError> {
        self.tcp
            .send_file(file, offset, count)
            .map_err(TlsError::from_kernel)
    }

    /// Sends the close_notify alert: the peer sees a clean end of data.
    pub fn close_notify(&self) -> Result<(), TlsError> {
        record::send_record(
            self.tcp.fd(),
            CONTENT_ALERT,
            &[ALERT_LEVEL_WARNING, ALERT_CLOSE_NOTIFY],
        )
        .map_err(TlsError::from_kernel)?;
        Ok(())
    }

    /// Sends a fatal alert, e.g. when the application rejects the peer; the
    /// connection is over for both sides.
    pub fn abort(&self, description: rustls::AlertDescription) -> Result<(), TlsError> {
        record::send_record(
            self.tcp.fd(),
            CONTENT_ALERT,
            &[ALERT_LEVEL_FATAL, u8::from(description)],
        )
        .map_err(TlsError::from_kernel)?;
        Ok(())
    }

    /// Receives application data; 0 means the peer closed (close_notify or FIN).
    ///
    /// Alerts and post-handshake messages are handled here: session tickets
    /// are skipped, a fatal alert or a key update (which this kernel cannot
    /// follow) is an error.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize, TlsError> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.early_read < self.early.len() {
            let n = buf.len().min(self.early.len() - self.early_read);
            buf[..n].copy_from_slice(&self.early[self.early_read..self.early_read + n]);
            self.early_read += n;
            return Ok(n);
        }
        loop {
            if self.peer_closed {
                return Ok(0);
            }
            let (n, content) = match &mut self.landing {
                None => record::recv_record(self.tcp.fd(), buf),
                Some(landing) => {
                    let want = buf.len().min(landing.len());
                    let got =
                        record::recv_record(self.tcp.fd(), &mut landing.as_mut_slice()[..want]);
                    if let Ok((n, _)) = got {
                        buf[..n].copy_from_slice(&landing.as_mut_slice()[..n]);
                    }
                    got
                }
            }
            .map_err(TlsError::from_kernel)?;
            if n == 0 || content == CONTENT_APPLICATION_DATA {
                return Ok(n);
            }
            self.take_control(content, &buf[..n])?;
        }
    }

    /// Adds bytes of a non-data record and acts on every whole message.
    fn take_control(&mut self, content: u8, bytes: &[u8]) -> Result<(), TlsError> {
        if content != CONTENT_ALERT && content != CONTENT_HANDSHAKE {
            return Err(TlsError::UnexpectedRecord(content));
        }
        if !self.control.is_empty() && self.control_type != content {
            // A message may span records but not change type midway.
            return Err(TlsError::UnexpectedRecord(content));
        }
        if self.control.len() + bytes.len() > CONTROL_LIMIT {
            return Err(TlsError::ControlTooLarge);
        }
        self.control_type = content;
        self.control.extend_from_slice(bytes);
        let mut used = 0;
        loop {
            let rest = &self.control[used..];
            let len = match content {
                CONTENT_ALERT if rest.len() >= 2 => 2,
                CONTENT_HANDSHAKE if rest.len() >= 4 => {
                    let body = usize::from(rest[1]) << 16
                        | usize::from(rest[2]) << 8
                        | usize::from(rest[3]);
                    if rest.len() < 4 + body {
                        break;
                    }
                    4 + body
                }
                _ => break,
            };
            let message = &rest[..len];
            match content {
                CONTENT_ALERT if message[1] == ALERT_CLOSE_NOTIFY => self.peer_closed = true,
                CONTENT_ALERT
                    if self.version == TlsVersion::Tls12 && message[0] == ALERT_LEVEL_WARNING =>
                {
                    tracing::debug!(alert = message[1], "TLS warning alert ignored");
                }
                CONTENT_ALERT => {
                    return Err(TlsError::Alert {
                        description: rustls::AlertDescription::from(message[1]),
                    });
                }
                _ if message[0] == HANDSHAKE_NEW_SESSION_TICKET => {
                    tracing::debug!(bytes = len, "TLS session ticket skipped");
                }
                _ if message[0] == HANDSHAKE_KEY_UPDATE => return Err(TlsError::KeyUpdate),
                _ => return Err(TlsError::UnexpectedHandshake(message[0])),
            }
            used += len;
        }
        self.control.drain(..used);
        Ok(())
    }
}

impl Read for KtlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv(buf).map_err(io::Error::from)
    }
}

impl Write for KtlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send(buf).map_err(io::Error::from)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
