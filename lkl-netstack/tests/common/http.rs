//! A small HTTP/1.x responder on library sockets: `GET` of files imported into
//! the library's ramfs, whose bodies go out with sendfile(2) — through kTLS when
//! the connection is a [`KtlsStream`].

use std::io::{self, Read};

use lkl_netstack::tls::KtlsStream;
use lkl_netstack::{Fd, Kernel, TcpStream};

/// What the responder needs of a connection, plain or TLS.
pub trait HttpConn: Read {
    fn send_all(&mut self, data: &[u8]) -> io::Result<()>;
    fn send_file(&mut self, file: &Fd, offset: &mut i64, count: usize) -> io::Result<usize>;
}

impl HttpConn for TcpStream {
    fn send_all(&mut self, data: &[u8]) -> io::Result<()> {
        io::Write::write_all(self, data)
    }
    fn send_file(&mut self, file: &Fd, offset: &mut i64, count: usize) -> io::Result<usize> {
        TcpStream::send_file(self, file, offset, count)
    }
}

impl HttpConn for KtlsStream {
    fn send_all(&mut self, data: &[u8]) -> io::Result<()> {
        Ok(KtlsStream::send_all(self, data)?)
    }
    fn send_file(&mut self, file: &Fd, offset: &mut i64, count: usize) -> io::Result<usize> {
        Ok(KtlsStream::send_file(self, file, offset, count)?)
    }
}

/// Files the responder serves: URL path, library path, length.
pub struct Docroot(pub Vec<(String, String, u64)>);

/// Answers one request on `conn`; returns the path asked for.
pub fn respond(conn: &mut impl HttpConn, kernel: &Kernel, docroot: &Docroot) -> io::Result<String> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 || head.len() > 8192 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "no request head",
            ));
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let found = docroot.0.iter().find(|(url, _, _)| url == target);
    match (method, found) {
        ("GET", Some((_, path, len))) => {
            let header = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\
                 Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
            );
            conn.send_all(header.as_bytes())?;
            let file = kernel.open_file(path)?;
            let mut offset = 0i64;
            while (offset as u64) < *len {
                let rest = (*len - offset as u64) as usize;
                if conn.send_file(&file, &mut offset, rest)? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"));
                }
            }
        }
        _ => {
            let body = "not found\n";
            let header = format!(
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            conn.send_all(header.as_bytes())?;
            conn.send_all(body.as_bytes())?;
        }
    }
    Ok(target.to_owned())
}

/// Splits an HTTP response into its head and body.
pub fn body_of(response: &[u8]) -> (&str, &[u8]) {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    (
        std::str::from_utf8(&response[..end]).expect("ASCII head"),
        &response[end + 4..],
    )
}
