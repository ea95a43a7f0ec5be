//! The front door's rules for a frontend's vhost-user requests: what the rust-vmm handler
//! would otherwise trust.
//!
//! [`Rules::check`] sees every request with the kinds of the file descriptors that came with
//! it ([`FdKind`], from `fstat`) before the handler does, and answers what to do with it
//! ([`Verdict`]) or why it is refused ([`Refusal`], each a counter). It is pure: no I/O, so
//! it is fuzzed as it runs (`fuzz/fuzz_targets/front_door.rs`).
//!
//! What is checked (vhost-user spec, "Front-end message types"):
//! * the header: a version-1 request, not a reply, a payload of at most [`MAX_PAYLOAD`];
//! * the fds: exactly as many as the request takes, of the kind it takes. Kick, call and
//!   error fds must be eventfds (the front door then makes them non-blocking), memory region
//!   fds regular files (memfd, tmpfs, hugetlbfs);
//! * memory regions (`SET_MEM_TABLE`, `ADD_MEM_REG`): each region's `mmap_offset + size`
//!   within its file, so no page of a fresh mapping lies beyond the end of its file;
//! * how much the frontend makes us hold: regions ([`MAX_REGIONS`], also what
//!   `GET_MAX_MEM_SLOTS` is made to answer) and early `SET_VRING_ENABLE`s ([`MAX_HELD`]).
//!
//! And one repair of order: QEMU sends `SET_VRING_ENABLE` right after
//! `SET_PROTOCOL_FEATURES`, before `SET_FEATURES`; the rust-vmm `vhost` 0.18 handler refuses
//! it there (`PROTOCOL_FEATURES` not yet acked) and drops the connection. Such a request is
//! held ([`Verdict::Hold`], acked by the front door when the frontend asked for an ack) and
//! replayed right after `SET_FEATURES` ([`Verdict::ForwardAndRelease`]).

use crate::sys::FdKind;

/// vhost-user request codes the front door looks at.
pub mod request {
    pub const SET_FEATURES: u32 = 2;
    pub const SET_MEM_TABLE: u32 = 5;
    pub const SET_LOG_BASE: u32 = 6;
    pub const SET_LOG_FD: u32 = 7;
    pub const SET_VRING_KICK: u32 = 12;
    pub const SET_VRING_CALL: u32 = 13;
    pub const SET_VRING_ERR: u32 = 14;
    pub const SET_VRING_ENABLE: u32 = 18;
    pub const SET_BACKEND_REQ_FD: u32 = 21;
    pub const SET_INFLIGHT_FD: u32 = 32;
    pub const GET_MAX_MEM_SLOTS: u32 = 36;
    pub const ADD_MEM_REG: u32 = 37;
    pub const REM_MEM_REG: u32 = 38;
    pub const SET_DEVICE_STATE_FD: u32 = 42;
}

/// Header flags (vhost-user "Header").
pub const FLAG_VERSION_MASK: u32 = 0x3;
pub const FLAG_VERSION: u32 = 0x1;
pub const FLAG_REPLY: u32 = 0x4;
pub const FLAG_NEED_REPLY: u32 = 0x8;
pub const HDR_LEN: usize = 12;
/// Largest payload accepted: the biggest request (`SET_CONFIG` with 256 bytes of config,
/// `SET_MEM_TABLE` with 8 regions) is far smaller.
pub const MAX_PAYLOAD: usize = 4096;
/// Most fds one request carries (`SET_MEM_TABLE` with its 8 regions).
pub const MAX_FDS: usize = 8;
/// Most guest memory regions a frontend may have mapped at once.
pub const MAX_REGIONS: u64 = 64;
/// Most early `SET_VRING_ENABLE`s held (one per ring would do: at most 63 rings).
pub const MAX_HELD: usize = 64;
/// The vring index payload's "no fd" bit (`SET_VRING_KICK`/`CALL`/`ERR`).
const VRING_NOFD: u64 = 0x100;
/// One memory region in a payload: guest address, size, user address, mmap offset.
const REGION_LEN: usize = 32;

/// A vhost-user message header (12 bytes, little endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub request: u32,
    pub flags: u32,
    pub size: u32,
}

impl Header {
    pub fn parse(b: &[u8; HDR_LEN]) -> Self {
        let f = |i: usize| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
        Self {
            request: f(0),
            flags: f(1),
            size: f(2),
        }
    }

    pub fn to_bytes(self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[..4].copy_from_slice(&self.request.to_le_bytes());
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..].copy_from_slice(&self.size.to_le_bytes());
        b
    }
}

/// Why a request was refused. The frontend is disconnected: what it believes the device
/// holds would no longer be true.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("header flags {flags:#x} are not those of a version-1 request")]
    BadHeader { flags: u32 },
    #[error("a payload of {size} bytes (at most {MAX_PAYLOAD})")]
    PayloadTooLarge { size: u32 },
    #[error("more file descriptors than any request carries ({MAX_FDS})")]
    TooManyFds,
    #[error("request {request} came with {count} file descriptors, which it does not take")]
    UnexpectedFds { request: u32, count: usize },
    #[error("request {request} has a malformed payload")]
    MalformedPayload { request: u32 },
    #[error("a memory region's fd is not a regular file (memfd, tmpfs or hugetlbfs)")]
    RegionFdNotFile,
    #[error(
        "a memory region claims bytes {offset:#x}..+{size:#x} of a file of {file_size:#x} bytes"
    )]
    RegionBeyondFile {
        offset: u64,
        size: u64,
        file_size: u64,
    },
    #[error("more than {MAX_REGIONS} guest memory regions")]
    TooManyRegions,
    #[error("request {request} passed an fd that is not an eventfd")]
    VringFdNotEventfd { request: u32 },
    #[error("the wrong kind of fd for request {request}")]
    WrongFdKind { request: u32 },
    #[error("more than {MAX_HELD} SET_VRING_ENABLE before SET_FEATURES")]
    TooManyHeld,
}

/// What to do with an accepted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it on.
    Forward,
    /// Keep it until `SET_FEATURES` (an early `SET_VRING_ENABLE`).
    Hold,
    /// Pass it on, then the held requests (`SET_FEATURES`).
    ForwardAndRelease,
}

/// One frontend's state as far as the rules need it.
#[derive(Debug, Default, Clone)]
pub struct Rules {
    features_set: bool,
    held: usize,
    regions: u64,
}

fn u64_at(p: &[u8], at: usize) -> Option<u64> {
    p.get(at..at + 8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
}

impl Rules {
    /// The header alone, before the payload is read.
    pub fn check_header(hdr: &Header) -> Result<(), Refusal> {
        if hdr.flags & FLAG_VERSION_MASK != FLAG_VERSION || hdr.flags & FLAG_REPLY != 0 {
            return Err(Refusal::BadHeader { flags: hdr.flags });
        }
        if hdr.size as usize > MAX_PAYLOAD {
            return Err(Refusal::PayloadTooLarge { size: hdr.size });
        }
        Ok(())
    }

    /// The whole request with the kinds of its fds.
    pub fn check(
        &mut self,
        hdr: &Header,
        payload: &[u8],
        fds: &[FdKind],
    ) -> Result<Verdict, Refusal> {
        use request::*;
        Self::check_header(hdr)?;
        if fds.len() > MAX_FDS {
            return Err(Refusal::TooManyFds);
        }
        let unexpected = || Refusal::UnexpectedFds {
            request: hdr.request,
            count: fds.len(),
        };
        let malformed = || Refusal::MalformedPayload {
            request: hdr.request,
        };
        match hdr.request {
            SET_MEM_TABLE => {
                let n = u32::from_le_bytes(
                    payload
                        .get(..4)
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(malformed)?,
                ) as usize;
                if n > MAX_FDS || payload.len() != 8 + n * REGION_LEN {
                    return Err(malformed());
                }
                if fds.len() != n {
                    return Err(unexpected());
                }
                for (i, kind) in fds.iter().enumerate() {
                    check_region(&payload[8 + i * REGION_LEN..], *kind)?;
                }
                self.regions = n as u64;
            }
            ADD_MEM_REG => {
                if payload.len() != 8 + REGION_LEN {
                    return Err(malformed());
                }
                let [kind] = fds else {
                    return Err(unexpected());
                };
                if self.regions >= MAX_REGIONS {
                    return Err(Refusal::TooManyRegions);
                }
                check_region(&payload[8..], *kind)?;
                self.regions += 1;
            }
            REM_MEM_REG => {
                if fds.len() > 1 {
                    return Err(unexpected());
                }
                self.regions = self.regions.saturating_sub(1);
            }
            SET_VRING_KICK | SET_VRING_CALL | SET_VRING_ERR => {
                let v = u64_at(payload, 0).ok_or_else(malformed)?;
                match (v & VRING_NOFD != 0, fds) {
                    (true, []) => {}
                    (false, [FdKind::EventFd]) => {}
                    (false, [_]) => {
                        return Err(Refusal::VringFdNotEventfd {
                            request: hdr.request,
                        });
                    }
                    _ => return Err(unexpected()),
                }
            }
            SET_LOG_FD => one_fd(hdr.request, fds, |k| k == FdKind::EventFd)?,
            SET_LOG_BASE | SET_INFLIGHT_FD => {
                one_fd(hdr.request, fds, |k| matches!(k, FdKind::File { .. }))?
            }
            SET_BACKEND_REQ_FD => one_fd(hdr.request, fds, |k| k == FdKind::Socket)?,
            SET_DEVICE_STATE_FD => one_fd(hdr.request, fds, |k| k == FdKind::Other)?,
            _ if !fds.is_empty() => return Err(unexpected()),
            SET_VRING_ENABLE if !self.features_set => {
                if self.held >= MAX_HELD {
                    return Err(Refusal::TooManyHeld);
                }
                self.held += 1;
                return Ok(Verdict::Hold);
            }
            SET_FEATURES => {
                self.features_set = true;
                self.held = 0;
                return Ok(Verdict::ForwardAndRelease);
            }
            _ => {}
        }
        Ok(Verdict::Forward)
    }

    /// A reply on its way to the frontend, changed where the front door's limits are lower
    /// than the handler's: `GET_MAX_MEM_SLOTS` answers at most [`MAX_REGIONS`].
    pub fn adjust_reply(hdr: &Header, payload: &mut [u8]) {
        if hdr.request == request::GET_MAX_MEM_SLOTS
            && let Some(slots) = u64_at(payload, 0)
            && slots > MAX_REGIONS
        {
            payload[..8].copy_from_slice(&MAX_REGIONS.to_le_bytes());
        }
    }
}

fn one_fd(request: u32, fds: &[FdKind], ok: impl Fn(FdKind) -> bool) -> Result<(), Refusal> {
    match fds {
        [k] if ok(*k) => Ok(()),
        [_] => Err(Refusal::WrongFdKind { request }),
        _ => Err(Refusal::UnexpectedFds {
            request,
            count: fds.len(),
        }),
    }
}

/// One region (guest address, size, user address, mmap offset) against its file.
fn check_region(region: &[u8], kind: FdKind) -> Result<(), Refusal> {
    let size = u64_at(region, 8).unwrap_or(0);
    let offset = u64_at(region, 24).unwrap_or(0);
    let FdKind::File {
        size: file_size, ..
    } = kind
    else {
        return Err(Refusal::RegionFdNotFile);
    };
    match offset.checked_add(size) {
        Some(end) if size != 0 && end <= file_size => Ok(()),
        _ => Err(Refusal::RegionBeyondFile {
            offset,
            size,
            file_size,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::request::*;
    use super::*;

    fn hdr(request: u32, size: usize) -> Header {
        Header {
            request,
            flags: FLAG_VERSION,
            size: size as u32,
        }
    }

    fn region(size: u64, offset: u64) -> Vec<u8> {
        [0x1000u64, size, 0x7f00_0000_0000, offset]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    fn mem_table(regions: &[(u64, u64)]) -> Vec<u8> {
        let mut p = (regions.len() as u64).to_le_bytes().to_vec();
        for (size, offset) in regions {
            p.extend(region(*size, *offset));
        }
        p
    }

    const FILE_1M: FdKind = FdKind::File { size: 1 << 20 };

    #[test]
    fn a_region_must_lie_within_its_file() {
        let mut r = Rules::default();
        let ok = mem_table(&[(1 << 19, 1 << 19)]);
        assert_eq!(
            r.check(&hdr(SET_MEM_TABLE, ok.len()), &ok, &[FILE_1M]),
            Ok(Verdict::Forward)
        );
        let beyond = mem_table(&[(1 << 20, 4096)]);
        assert_eq!(
            r.check(&hdr(SET_MEM_TABLE, beyond.len()), &beyond, &[FILE_1M]),
            Err(Refusal::RegionBeyondFile {
                offset: 4096,
                size: 1 << 20,
                file_size: 1 << 20
            })
        );
        let wraps = mem_table(&[(u64::MAX, 2)]);
        assert!(matches!(
            r.check(&hdr(SET_MEM_TABLE, wraps.len()), &wraps, &[FILE_1M]),
            Err(Refusal::RegionBeyondFile { .. })
        ));
        let mut add = 0u64.to_le_bytes().to_vec();
        add.extend(region(2 << 20, 0));
        assert!(matches!(
            r.check(&hdr(ADD_MEM_REG, add.len()), &add, &[FILE_1M]),
            Err(Refusal::RegionBeyondFile { .. })
        ));
        assert_eq!(
            r.check(&hdr(ADD_MEM_REG, add.len()), &add, &[FdKind::EventFd]),
            Err(Refusal::RegionFdNotFile)
        );
    }

    #[test]
    fn a_table_needs_one_fd_per_region() {
        let mut r = Rules::default();
        let t = mem_table(&[(4096, 0), (4096, 4096)]);
        assert_eq!(
            r.check(&hdr(SET_MEM_TABLE, t.len()), &t, &[FILE_1M]),
            Err(Refusal::UnexpectedFds {
                request: SET_MEM_TABLE,
                count: 1
            })
        );
    }

    #[test]
    fn vring_fds_must_be_eventfds_unless_nofd() {
        let mut r = Rules::default();
        let p = 1u64.to_le_bytes();
        for req in [SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR] {
            assert_eq!(
                r.check(&hdr(req, 8), &p, &[FdKind::EventFd]),
                Ok(Verdict::Forward)
            );
            for wrong in [FdKind::Other, FdKind::Socket, FILE_1M] {
                assert_eq!(
                    r.check(&hdr(req, 8), &p, &[wrong]),
                    Err(Refusal::VringFdNotEventfd { request: req })
                );
            }
            assert!(r.check(&hdr(req, 8), &p, &[]).is_err());
            let nofd = (1u64 | VRING_NOFD).to_le_bytes();
            assert_eq!(r.check(&hdr(req, 8), &nofd, &[]), Ok(Verdict::Forward));
        }
    }

    #[test]
    fn fds_on_requests_that_take_none_are_refused() {
        let mut r = Rules::default();
        assert_eq!(
            r.check(&hdr(SET_FEATURES, 8), &[0; 8], &[FdKind::EventFd]),
            Err(Refusal::UnexpectedFds {
                request: SET_FEATURES,
                count: 1
            })
        );
    }

    #[test]
    fn early_enables_are_held_and_bounded() {
        let mut r = Rules::default();
        for _ in 0..MAX_HELD {
            assert_eq!(
                r.check(&hdr(SET_VRING_ENABLE, 8), &[0; 8], &[]),
                Ok(Verdict::Hold)
            );
        }
        assert_eq!(
            r.check(&hdr(SET_VRING_ENABLE, 8), &[0; 8], &[]),
            Err(Refusal::TooManyHeld)
        );
        assert_eq!(
            r.check(&hdr(SET_FEATURES, 8), &[0; 8], &[]),
            Ok(Verdict::ForwardAndRelease)
        );
        assert_eq!(
            r.check(&hdr(SET_VRING_ENABLE, 8), &[0; 8], &[]),
            Ok(Verdict::Forward)
        );
    }

    #[test]
    fn regions_are_bounded_and_the_slot_count_says_so() {
        let mut r = Rules::default();
        let mut add = 0u64.to_le_bytes().to_vec();
        add.extend(region(4096, 0));
        for _ in 0..MAX_REGIONS {
            assert!(
                r.check(&hdr(ADD_MEM_REG, add.len()), &add, &[FILE_1M])
                    .is_ok()
            );
        }
        assert_eq!(
            r.check(&hdr(ADD_MEM_REG, add.len()), &add, &[FILE_1M]),
            Err(Refusal::TooManyRegions)
        );
        let mut reply = 509u64.to_le_bytes();
        Rules::adjust_reply(&hdr(GET_MAX_MEM_SLOTS, 8), &mut reply);
        assert_eq!(u64::from_le_bytes(reply), MAX_REGIONS);
    }

    #[test]
    fn headers_must_be_version_1_requests_of_bounded_size() {
        assert!(Rules::check_header(&hdr(SET_FEATURES, 8)).is_ok());
        let mut h = hdr(SET_FEATURES, 8);
        h.flags = FLAG_VERSION | FLAG_REPLY;
        assert_eq!(
            Rules::check_header(&h),
            Err(Refusal::BadHeader { flags: h.flags })
        );
        assert_eq!(
            Rules::check_header(&hdr(SET_FEATURES, MAX_PAYLOAD + 1)),
            Err(Refusal::PayloadTooLarge {
                size: MAX_PAYLOAD as u32 + 1
            })
        );
    }
}
