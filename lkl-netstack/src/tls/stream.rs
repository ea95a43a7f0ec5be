//! A TCP connection whose records the kernel encrypts and decrypts.

use std::io::{self, Read, Write};

use super::TlsError;
use super::control::{ALERT_CLOSE_NOTIFY, ALERT_LEVEL_WARNING, ControlOutcome, ControlReader};
use super::keys::{SOL_TLS, TLS_RX, TLS_TX, TlsVersion, TrafficKeys};
use super::record::{self, CONTENT_ALERT, CONTENT_APPLICATION_DATA};
use crate::user_memory::UserBuffer;
use crate::{Fd, TcpStream};

const TCP_ULP: i32 = 31;
const ALERT_LEVEL_FATAL: u8 = 2;
/// Room for a few whole records per receive.
const LANDING_LEN: usize = 64 << 10;

/// A TLS connection after the handshake: the kernel's TLS ULP owns the record
/// layer, so `send`, `recv` and `sendfile` move plaintext and the kernel does the
/// AEAD and framing.
#[derive(Debug)]
pub struct KtlsStream {
    tcp: TcpStream,
    version: TlsVersion,
    cipher: &'static str,
    /// Plaintext that arrived with the handshake, before the kernel took over.
    early: Vec<u8>,
    early_read: usize,
    /// Alerts and post-handshake messages, gathered and judged.
    control: ControlReader,
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
            control: ControlReader::new(tx.version),
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
        (&self.tcp).write(data).map_err(TlsError::Io)
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
            .map_err(TlsError::Io)
    }

    /// Sends the close_notify alert: the peer sees a clean end of data.
    pub fn close_notify(&self) -> Result<(), TlsError> {
        record::send_record(
            self.tcp.fd(),
            CONTENT_ALERT,
            &[ALERT_LEVEL_WARNING, ALERT_CLOSE_NOTIFY],
        )
        .map_err(TlsError::Io)?;
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
        .map_err(TlsError::Io)?;
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
            .map_err(TlsError::from_receive)?;
            if n == 0 || content == CONTENT_APPLICATION_DATA {
                return Ok(n);
            }
            if self.control.take(content, &buf[..n])? == ControlOutcome::PeerClosed {
                self.peer_closed = true;
            }
        }
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
