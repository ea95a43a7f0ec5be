//! The peer's non-data records after the handshake: alerts and post-handshake
//! handshake messages, which the kernel hands over whole or in pieces, one
//! record type per receive. Peer-controlled bytes: every length is checked.

use super::TlsError;
use super::keys::TlsVersion;
use super::record::{CONTENT_ALERT, CONTENT_HANDSHAKE};

pub(crate) const ALERT_LEVEL_WARNING: u8 = 1;
pub(crate) const ALERT_CLOSE_NOTIFY: u8 = 0;
const ALERT_USER_CANCELED: u8 = 90;
const HANDSHAKE_HEADER_LEN: usize = 4;
const HANDSHAKE_NEW_SESSION_TICKET: u8 = 4;
const HANDSHAKE_KEY_UPDATE: u8 = 24;
/// A peer may not make us hold more than this of one control message.
const CONTROL_LIMIT: usize = 1 << 16;

/// What the peer's control messages mean for the data stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ControlOutcome {
    /// Nothing for the reader (a ticket, a warning, half a message).
    Continue,
    /// close_notify: the peer sends no more data.
    PeerClosed,
}

/// Collects control records into messages and judges each.
#[derive(Debug)]
pub(crate) struct ControlReader {
    version: TlsVersion,
    pending: Vec<u8>,
    pending_type: u8,
}

impl ControlReader {
    pub(crate) fn new(version: TlsVersion) -> ControlReader {
        ControlReader {
            version,
            pending: Vec::new(),
            pending_type: 0,
        }
    }

    /// Takes the bytes of one received record of type `content`.
    pub(crate) fn take(&mut self, content: u8, bytes: &[u8]) -> Result<ControlOutcome, TlsError> {
        if content != CONTENT_ALERT && content != CONTENT_HANDSHAKE {
            return Err(TlsError::UnexpectedRecord(content));
        }
        if !self.pending.is_empty() && self.pending_type != content {
            // A message may span records, but not change type midway.
            return Err(TlsError::UnexpectedRecord(content));
        }
        if self.pending.len() + bytes.len() > CONTROL_LIMIT {
            return Err(TlsError::ControlTooLarge);
        }
        self.pending_type = content;
        self.pending.extend_from_slice(bytes);
        let mut used = 0;
        let mut outcome = ControlOutcome::Continue;
        while outcome == ControlOutcome::Continue {
            let rest = &self.pending[used..];
            let Some(len) = message_len(content, rest)? else {
                break;
            };
            outcome = self.judge(content, &rest[..len])?;
            used += len;
        }
        self.pending.drain(..used);
        Ok(outcome)
    }

    fn judge(&self, content: u8, message: &[u8]) -> Result<ControlOutcome, TlsError> {
        if content == CONTENT_ALERT {
            let (level, description) = (message[0], message[1]);
            return match description {
                ALERT_CLOSE_NOTIFY => Ok(ControlOutcome::PeerClosed),
                // Always a warning, and followed by close_notify.
                ALERT_USER_CANCELED => Ok(ControlOutcome::Continue),
                // TLS 1.3 has no warnings other than those two (RFC 8446 §6).
                _ if self.version == TlsVersion::Tls12 && level == ALERT_LEVEL_WARNING => {
                    tracing::debug!(alert = description, "TLS warning alert ignored");
                    Ok(ControlOutcome::Continue)
                }
                _ => Err(TlsError::Alert {
                    description: rustls::AlertDescription::from(description),
                }),
            };
        }
        match message[0] {
            HANDSHAKE_NEW_SESSION_TICKET if self.version == TlsVersion::Tls13 => {
                tracing::debug!(bytes = message.len(), "TLS session ticket skipped");
                Ok(ControlOutcome::Continue)
            }
            HANDSHAKE_KEY_UPDATE => Err(TlsError::KeyUpdate),
            other => Err(TlsError::UnexpectedHandshake(other)),
        }
    }
}

/// The length of the whole message at the start of `rest`, if it is all there.
fn message_len(content: u8, rest: &[u8]) -> Result<Option<usize>, TlsError> {
    if content == CONTENT_ALERT {
        return Ok((rest.len() >= 2).then_some(2));
    }
    let Some(header) = rest.get(..HANDSHAKE_HEADER_LEN) else {
        return Ok(None);
    };
    let body = usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
    if HANDSHAKE_HEADER_LEN + body > CONTROL_LIMIT {
        return Err(TlsError::ControlTooLarge);
    }
    Ok((rest.len() >= HANDSHAKE_HEADER_LEN + body).then_some(HANDSHAKE_HEADER_LEN + body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(body: usize) -> Vec<u8> {
        let mut m = vec![
            HANDSHAKE_NEW_SESSION_TICKET,
            0,
            (body >> 8) as u8,
            body as u8,
        ];
        m.resize(4 + body, 0xee);
        m
    }

    #[test]
    fn a_ticket_split_over_records_is_skipped_whole() {
        let mut r = ControlReader::new(TlsVersion::Tls13);
        let t = ticket(300);
        assert_eq!(
            r.take(CONTENT_HANDSHAKE, &t[..3]).unwrap(),
            ControlOutcome::Continue
        );
        assert_eq!(
            r.take(CONTENT_HANDSHAKE, &t[3..100]).unwrap(),
            ControlOutcome::Continue
        );
        assert_eq!(
            r.take(CONTENT_HANDSHAKE, &t[100..]).unwrap(),
            ControlOutcome::Continue
        );
        assert!(r.pending.is_empty());
    }

    #[test]
    fn a_key_update_after_a_ticket_in_one_record_is_an_error() {
        let mut r = ControlReader::new(TlsVersion::Tls13);
        let mut record = ticket(10);
        record.extend_from_slice(&[HANDSHAKE_KEY_UPDATE, 0, 0, 1, 0]);
        assert!(matches!(
            r.take(CONTENT_HANDSHAKE, &record),
            Err(TlsError::KeyUpdate)
        ));
    }

    #[test]
    fn close_notify_split_in_two_ends_the_stream() {
        let mut r = ControlReader::new(TlsVersion::Tls12);
        assert_eq!(
            r.take(CONTENT_ALERT, &[1]).unwrap(),
            ControlOutcome::Continue
        );
        assert_eq!(
            r.take(CONTENT_ALERT, &[0]).unwrap(),
            ControlOutcome::PeerClosed
        );
    }

    #[test]
    fn warnings_pass_in_tls12_and_are_fatal_in_tls13() {
        let no_renegotiation = [ALERT_LEVEL_WARNING, 100];
        let mut r12 = ControlReader::new(TlsVersion::Tls12);
        assert_eq!(
            r12.take(CONTENT_ALERT, &no_renegotiation).unwrap(),
            ControlOutcome::Continue
        );
        let mut r13 = ControlReader::new(TlsVersion::Tls13);
        assert!(matches!(
            r13.take(CONTENT_ALERT, &no_renegotiation),
            Err(TlsError::Alert { .. })
        ));
        let mut r13 = ControlReader::new(TlsVersion::Tls13);
        assert_eq!(
            r13.take(CONTENT_ALERT, &[ALERT_LEVEL_WARNING, ALERT_USER_CANCELED])
                .unwrap(),
            ControlOutcome::Continue
        );
    }

    #[test]
    fn hostile_shapes_are_errors_not_panics() {
        let mut r = ControlReader::new(TlsVersion::Tls13);
        assert!(matches!(
            r.take(24, &[1]),
            Err(TlsError::UnexpectedRecord(24))
        ));
        // A message claiming 16 MiB is refused at once.
        assert!(matches!(
            r.take(
                CONTENT_HANDSHAKE,
                &[HANDSHAKE_NEW_SESSION_TICKET, 0xff, 0xff, 0xff]
            ),
            Err(TlsError::ControlTooLarge)
        ));
        // Half a handshake message, then an alert: the type changed midway.
        let mut r = ControlReader::new(TlsVersion::Tls13);
        r.take(CONTENT_HANDSHAKE, &ticket(50)[..20]).unwrap();
        assert!(matches!(
            r.take(CONTENT_ALERT, &[2, 40]),
            Err(TlsError::UnexpectedRecord(_))
        ));
        // A TLS 1.2 peer may not send tickets after the handshake (nor HelloRequest).
        let mut r = ControlReader::new(TlsVersion::Tls12);
        assert!(matches!(
            r.take(CONTENT_HANDSHAKE, &ticket(8)),
            Err(TlsError::UnexpectedHandshake(HANDSHAKE_NEW_SESSION_TICKET))
        ));
    }

    #[test]
    fn every_short_input_is_handled() {
        // Every prefix of every byte value, both types, both versions: no panic.
        for version in [TlsVersion::Tls12, TlsVersion::Tls13] {
            for content in [CONTENT_ALERT, CONTENT_HANDSHAKE] {
                for a in 0..=255u8 {
                    for len in 0..=5 {
                        let mut r = ControlReader::new(version);
                        let _ = r.take(content, &[a, 0, 0, 1, a][..len]);
                    }
                }
            }
        }
    }
}
