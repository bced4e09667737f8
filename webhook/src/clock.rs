//! The clocks of one connection, decided from what the client sends and
//! when requests start and end: the header timeout counted from the first
//! byte of a request, the idle timeout between requests, and a last grace
//! period for connections asked to close. Pure: the caller passes the time.
//!
//! On HTTP/1.1 any byte while no request is in progress starts a request
//! head; on HTTP/2 the frame headers tell when a header block starts and ends.

use std::time::Duration;

use tokio::time::Instant;

use crate::limits::Limits;

/// The client connection preface of HTTP/2 (RFC 9113, 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A connection that never sent a request may be closed to make room at the
/// connection cap once it is this old.
pub const UNUSED_AFTER: Duration = Duration::from_secs(1);

/// The clocks of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
    /// After a connection is asked to close, how long it may take.
    pub grace: Duration,
}

impl Timeouts {
    pub fn from_limits(l: &Limits) -> Self {
        Self {
            header: l.header_timeout,
            idle: l.idle_timeout,
            grace: l.body_timeout,
        }
    }
}

/// What a connection's clock runs out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// A request head started too long ago: close now.
    Header,
    /// No request for too long: ask the connection to close.
    Idle,
    /// Asked to close too long ago: close now.
    Grace,
}

/// Follows HTTP/2 frame boundaries in the bytes a client sends, to tell
/// whether a header block (HEADERS and its CONTINUATION frames) is open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct H2Frames {
    head: [u8; 9],
    head_len: usize,
    payload_left: usize,
    /// The frame being read ends a header block.
    ends_block: bool,
    in_block: bool,
}

impl H2Frames {
    const HEADERS: u8 = 0x1;
    const PUSH_PROMISE: u8 = 0x5;
    const CONTINUATION: u8 = 0x9;
    const END_HEADERS: u8 = 0x4;

    /// Reads more bytes after the preface; true if a header block ended in them.
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        let mut ended = false;
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
            } else {
                let n = (9 - self.head_len).min(bytes.len());
                self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[..n]);
                self.head_len += n;
                bytes = &bytes[n..];
                if self.head_len < 9 {
                    break;
                }
                self.head_len = 0;
                let [l0, l1, l2, kind, flags, ..] = self.head;
                self.payload_left = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
                let header_frame = matches!(
                    kind,
                    Self::HEADERS | Self::PUSH_PROMISE | Self::CONTINUATION
                );
                if header_frame {
                    self.in_block = true;
                }
                self.ends_block = header_frame && flags & Self::END_HEADERS != 0;
            }
            if self.payload_left == 0 && self.head_len == 0 && self.ends_block {
                self.ends_block = false;
                self.in_block = false;
                ended = true;
            }
        }
        ended
    }

    pub fn in_header_block(&self) -> bool {
        self.in_block
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Proto {
    /// Comparing the first bytes with the HTTP/2 preface.
    Sniffing(usize),
    Http1,
    Http2(H2Frames),
}

/// The state of one connection, as its clocks see it.
#[derive(Debug, Clone)]
pub struct Clock {
    opened: Instant,
    proto: Proto,
    in_flight: usize,
    served: u64,
    idle_since: Instant,
    head_since: Option<Instant>,
    closing_since: Option<Instant>,
}

impl Clock {
    pub fn new(now: Instant) -> Self {
        Self {
            opened: now,
            proto: Proto::Sniffing(0),
            in_flight: 0,
            served: 0,
            idle_since: now,
            head_since: None,
            closing_since: None,
        }
    }

    /// Bytes arrived from the client. True if a clock now ends earlier.
    pub fn on_read(&mut self, bytes: &[u8], now: Instant) -> bool {
        let mut rest = bytes;
        if let Proto::Sniffing(matched) = self.proto {
            let n = (H2_PREFACE.len() - matched).min(rest.len());
            if rest[..n] == H2_PREFACE[matched..matched + n] {
                if matched + n == H2_PREFACE.len() {
                    self.proto = Proto::Http2(H2Frames::default());
                    // The preface is not a request head.
                    self.head_since = None;
                    rest = &rest[n..];
                } else {
                    self.proto = Proto::Sniffing(matched + n);
                    return self.start_head(now);
                }
            } else {
                self.proto = Proto::Http1;
            }
        }
        match &mut self.proto {
            Proto::Http2(frames) => {
                if frames.feed(rest) {
                    self.head_since = None;
                }
                if frames.in_header_block() {
                    return self.start_head(now);
                }
                false
            }
            _ if self.in_flight == 0 && !bytes.is_empty() => self.start_head(now),
            _ => false,
        }
    }

    fn start_head(&mut self, now: Instant) -> bool {
        if self.head_since.is_some() {
            return false;
        }
        self.head_since = Some(now);
        true
    }

    /// hyper hands a request to the router.
    pub fn request_started(&mut self) {
        self.in_flight += 1;
        self.served += 1;
        if !matches!(self.proto, Proto::Http2(_)) {
            self.head_since = None;
        }
    }

    /// The router answered a request. True if the idle clock starts.
    pub fn request_ended(&mut self, now: Instant) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.idle_since = now;
            return true;
        }
        false
    }

    pub fn closing(&mut self, now: Instant) {
        self.closing_since.get_or_insert(now);
    }

    /// Never served a request, has none in progress, and is old enough that
    /// a real client would have sent one.
    pub fn unused(&self, now: Instant) -> bool {
        self.served == 0
            && self.in_flight == 0
            && self.head_since.is_none()
            && now.saturating_duration_since(self.opened) >= UNUSED_AFTER
    }

    /// When the next clock runs out, and which.
    pub fn next_expiry(&self, t: &Timeouts) -> Option<(Instant, Expiry)> {
        let header = self.head_since.map(|h| (h + t.header, Expiry::Header));
        let idle =
            (self.in_flight == 0 && self.head_since.is_none() && self.closing_since.is_none())
                .then(|| (self.idle_since + t.idle, Expiry::Idle));
        let grace = self.closing_since.map(|c| (c + t.grace, Expiry::Grace));
        [header, idle, grace]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }

    /// The clock that has run out at `now`, if any.
    pub fn expired(&self, t: &Timeouts, now: Instant) -> Option<Expiry> {
        self.next_expiry(t)
            .and_then(|(at, why)| (at <= now).then_some(why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn header_blocks_are_followed_across_reads() {
        let mut f = H2Frames::default();
        // SETTINGS, then a HEADERS frame without END_HEADERS.
        assert!(!f.feed(&frame(0x4, 0, &[0; 6])));
        assert!(!f.in_header_block());
        let headers = frame(0x1, 0x0, &[7; 100]);
        assert!(!f.feed(&headers[..5]));
        assert!(!f.in_header_block(), "the frame header is not complete yet");
        assert!(!f.feed(&headers[5..50]));
        assert!(f.in_header_block());
        assert!(!f.feed(&headers[50..]));
        assert!(f.in_header_block(), "no END_HEADERS yet");
        // CONTINUATION with END_HEADERS, byte by byte.
        let cont = frame(0x9, 0x4, &[8; 20]);
        for (i, b) in cont.iter().enumerate() {
            let ended = f.feed(&[*b]);
            assert_eq!(ended, i == cont.len() - 1, "byte {i}");
        }
        assert!(!f.in_header_block());
        // HEADERS with END_HEADERS and END_STREAM in one read, then DATA.
        let mut both = frame(0x1, 0x5, &[1; 30]);
        both.extend(frame(0x0, 0x1, &[2; 1000]));
        assert!(f.feed(&both));
        assert!(!f.in_header_block());
        // An empty HEADERS frame with END_HEADERS ends at its frame header.
        assert!(f.feed(&frame(0x1, 0x4, &[])));
        // A DATA frame with the END_HEADERS bit set means nothing.
        assert!(!f.feed(&frame(0x0, 0x4, &[3; 10])));
    }

    fn t() -> Timeouts {
        Timeouts {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            grace: Duration::from_secs(30),
        }
    }

    #[test]
    fn http1_clocks() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut c = Clock::new(t0);
        // Idle from the start.
        assert_eq!(c.next_expiry(&t()), Some((s(60), Expiry::Idle)));
        assert!(!c.unused(s(0)));
        assert!(c.unused(s(1)));
        // First byte of a request head at 5 s: the header clock.
        assert!(c.on_read(b"P", s(5)));
        assert_eq!(c.next_expiry(&t()), Some((s(15), Expiry::Header)));
        assert!(!c.on_read(b"OST / HTTP/1.1\r\n", s(7)), "already counting");
        assert_eq!(c.expired(&t(), s(14)), None);
        assert_eq!(c.expired(&t(), s(15)), Some(Expiry::Header));
        assert!(!c.unused(s(8)), "a request is coming");
        // The head is complete: no clock while the request is in progress
        // (the handler keeps the body clock), even as the body arrives.
        c.request_started();
        assert_eq!(c.next_expiry(&t()), None);
        assert!(!c.on_read(b"{}", s(9)));
        assert_eq!(c.next_expiry(&t()), None);
        // Answered at 20 s: idle until 80 s.
        assert!(c.request_ended(s(20)));
        assert_eq!(c.next_expiry(&t()), Some((s(80), Expiry::Idle)));
        assert!(!c.unused(s(30)), "it served a request");
        // Asked to close at 80 s: 30 s of grace, no idle clock any more.
        c.closing(s(80));
        assert_eq!(c.next_expiry(&t()), Some((s(110), Expiry::Grace)));
        c.closing(s(90));
        assert_eq!(c.next_expiry(&t()), Some((s(110), Expiry::Grace)));
    }

    #[test]
    fn a_partial_preface_is_a_head_and_the_full_one_is_not() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut c = Clock::new(t0);
        assert!(c.on_read(&H2_PREFACE[..10], s(1)));
        assert_eq!(c.next_expiry(&t()), Some((s(11), Expiry::Header)));
        let mut rest = H2_PREFACE[10..].to_vec();
        rest.extend(frame(0x4, 0, &[0; 6]));
        assert!(!c.on_read(&rest, s(2)));
        assert_eq!(c.next_expiry(&t()), Some((s(60), Expiry::Idle)));
    }

    #[test]
    fn http2_clocks() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut c = Clock::new(t0);
        let mut bytes = H2_PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, &[0; 6]));
        assert!(!c.on_read(&bytes, s(1)));
        // PINGs are not requests: the idle clock keeps running.
        assert!(!c.on_read(&frame(0x6, 0, &[0; 8]), s(30)));
        assert_eq!(c.next_expiry(&t()), Some((s(60), Expiry::Idle)));
        // A whole request in one read: no header clock, one request.
        assert!(!c.on_read(&frame(0x1, 0x5, &[1; 40]), s(31)));
        c.request_started();
        assert_eq!(c.next_expiry(&t()), None);
        // A second stream's header block stalls while the first is in
        // progress: the header clock runs anyway.
        let slow = frame(0x1, 0x0, &[1; 40]);
        assert!(c.on_read(&slow, s(32)));
        assert_eq!(c.next_expiry(&t()), Some((s(42), Expiry::Header)));
        // The first request ends; the open header block still counts.
        assert!(c.request_ended(s(33)));
        assert_eq!(c.next_expiry(&t()), Some((s(42), Expiry::Header)));
        // The block ends: back to idle from 33 s.
        assert!(!c.on_read(&frame(0x9, 0x4, &[1; 4]), s(34)));
        assert_eq!(c.next_expiry(&t()), Some((s(93), Expiry::Idle)));
        // Anything read while a header block is open keeps its start time.
        assert!(c.on_read(&frame(0x1, 0x0, &[1; 4]), s(40)));
        assert!(!c.on_read(&frame(0x9, 0x0, &[1; 4]), s(45)));
        assert_eq!(c.next_expiry(&t()), Some((s(50), Expiry::Header)));
    }

    #[test]
    fn unused_needs_age_and_no_head() {
        let t0 = Instant::now();
        let mut c = Clock::new(t0);
        assert!(!c.unused(t0 + Duration::from_millis(999)));
        assert!(c.unused(t0 + UNUSED_AFTER));
        c.on_read(b"G", t0);
        assert!(!c.unused(t0 + Duration::from_secs(5)));
    }
}
