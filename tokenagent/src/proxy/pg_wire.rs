//! The PostgreSQL wire protocol, as far as the proxy needs it: pure functions
//! over bytes, with no I/O, so they are tested and fuzzed alone.
//!
//! Messages before a session starts have no type byte (`Int32 length`,
//! `Int32 code`, body); every later message is `Byte1 type`, `Int32 length`
//! (counting itself), body.

use std::fmt;

/// `Int32 80877103`: the client asks for TLS.
pub const SSL_REQUEST: u32 = 80_877_103;
/// `Int32 80877104`: the client asks for GSSAPI encryption.
pub const GSSENC_REQUEST: u32 = 80_877_104;
/// `Int32 80877102`: a cancel request for another session.
pub const CANCEL_REQUEST: u32 = 80_877_102;
/// Protocol 3.0 and 3.2 (PostgreSQL 18).
pub const PROTOCOL_3_0: u32 = 3 << 16;
pub const PROTOCOL_3_2: u32 = (3 << 16) | 2;
/// The server's own cap on a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_LEN: usize = 10_000;
/// The longest cancel key of protocol 3.2.
pub const MAX_CANCEL_KEY: usize = 256;
/// The longest message the proxy reads whole before the session is spliced
/// (authentication requests, ErrorResponse, ParameterStatus ...).
pub const MAX_PRE_SESSION_MESSAGE: usize = 64 * 1024;

/// The first packet of a client connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Initial {
    SslRequest,
    GssEncRequest,
    Cancel(CancelKey),
    Startup(Startup),
}

/// A cancel request's target: the backend's process id and secret key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CancelKey {
    pub pid: u32,
    pub secret: Vec<u8>,
}

/// A StartupMessage: the protocol version and its parameters in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Startup {
    pub version: u32,
    pub params: Vec<(String, String)>,
}

impl Startup {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn version_string(&self) -> String {
        format!("{}.{}", self.version >> 16, self.version & 0xffff)
    }

    /// The message again, as it goes upstream (parameters unchanged).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(64);
        body.extend_from_slice(&self.version.to_be_bytes());
        for (k, v) in &self.params {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        with_length(&body)
    }
}

/// A packet the proxy cannot accept. The text goes to the client in an
/// ErrorResponse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("invalid startup packet length {0}")]
    BadLength(u32),
    #[error("unsupported frontend protocol {major}.{minor}: the proxy accepts 3.0 and 3.2")]
    Version { major: u32, minor: u32 },
    #[error("invalid startup packet layout: {0}")]
    Layout(&'static str),
    #[error("invalid cancel request length {0}")]
    CancelLength(usize),
    #[error("message of type {kind:?} is {len} bytes long, more than the {max} allowed before the session starts")]
    TooLong { kind: char, len: usize, max: usize },
}

/// How much of a buffer a parse needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// Not enough bytes yet; at least this many in total are needed.
    Incomplete(usize),
    /// The value and how many bytes it took.
    Done(T, usize),
}

/// Parses the client's first packet (or its next one after refusing TLS).
pub fn parse_initial(buf: &[u8]) -> Result<Parsed<Initial>, WireError> {
    if buf.len() < 8 {
        return Ok(Parsed::Incomplete(8));
    }
    let len = be32(&buf[0..4]);
    if len < 8 || len as usize > MAX_STARTUP_LEN {
        return Err(WireError::BadLength(len));
    }
    let len = len as usize;
    if buf.len() < len {
        return Ok(Parsed::Incomplete(len));
    }
    let code = be32(&buf[4..8]);
    let body = &buf[8..len];
    let initial = match code {
        SSL_REQUEST | GSSENC_REQUEST if len != 8 => return Err(WireError::BadLength(len as u32)),
        SSL_REQUEST => Initial::SslRequest,
        GSSENC_REQUEST => Initial::GssEncRequest,
        CANCEL_REQUEST => {
            // pid, then a key of 4 bytes (3.0) up to 256 bytes (3.2).
            if body.len() < 8 || body.len() > 4 + MAX_CANCEL_KEY {
                return Err(WireError::CancelLength(len));
            }
            Initial::Cancel(CancelKey {
                pid: be32(&body[0..4]),
                secret: body[4..].to_vec(),
            })
        }
        v if v >> 16 == 3 && (v == PROTOCOL_3_0 || v == PROTOCOL_3_2) => {
            Initial::Startup(Startup {
                version: v,
                params: parse_params(body)?,
            })
        }
        v => {
            return Err(WireError::Version {
                major: v >> 16,
                minor: v & 0xffff,
            })
        }
    };
    Ok(Parsed::Done(initial, len))
}

fn parse_params(body: &[u8]) -> Result<Vec<(String, String)>, WireError> {
    let mut params = Vec::new();
    let mut rest = body;
    loop {
        let Some(end) = rest.iter().position(|&b| b == 0) else {
            return Err(WireError::Layout("missing terminator"));
        };
        if end == 0 {
            if rest.len() != 1 {
                return Err(WireError::Layout("bytes after the terminator"));
            }
            return Ok(params);
        }
        let key = utf8(&rest[..end])?;
        rest = &rest[end + 1..];
        let Some(vend) = rest.iter().position(|&b| b == 0) else {
            return Err(WireError::Layout("parameter without a value"));
        };
        let value = utf8(&rest[..vend])?;
        rest = &rest[vend + 1..];
        if params.iter().any(|(k, _)| *k == key) {
            return Err(WireError::Layout("a parameter appears twice"));
        }
        params.push((key, value));
    }
}

fn utf8(b: &[u8]) -> Result<String, WireError> {
    String::from_utf8(b.to_vec()).map_err(|_| WireError::Layout("a parameter is not UTF-8"))
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn with_length(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// An SSLRequest, as sent upstream.
pub fn ssl_request() -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0..4].copy_from_slice(&8u32.to_be_bytes());
    b[4..8].copy_from_slice(&SSL_REQUEST.to_be_bytes());
    b
}

/// A CancelRequest, as sent upstream.
pub fn cancel_request(key: &CancelKey) -> Vec<u8> {
    let mut body = Vec::with_capacity(8 + key.secret.len());
    body.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
    body.extend_from_slice(&key.pid.to_be_bytes());
    body.extend_from_slice(&key.secret);
    with_length(&body)
}

/// A typed backend or frontend message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: u8,
    pub body: &'a [u8],
}

/// Splits one typed message off `buf`, refusing anything longer than `max`.
pub fn parse_message(buf: &[u8], max: usize) -> Result<Parsed<Message<'_>>, WireError> {
    if buf.len() < 5 {
        return Ok(Parsed::Incomplete(5));
    }
    let len = be32(&buf[1..5]) as usize;
    if len < 4 || len > max {
        return Err(WireError::TooLong {
            kind: buf[0] as char,
            len,
            max,
        });
    }
    let total = 1 + len;
    if buf.len() < total {
        return Ok(Parsed::Incomplete(total));
    }
    Ok(Parsed::Done(
        Message {
            kind: buf[0],
            body: &buf[5..total],
        },
        total,
    ))
}

/// What the server asks for in an `R` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest {
    Ok,
    Cleartext,
    Md5,
    Sasl(Vec<String>),
    Other(u32),
}

impl fmt::Display for AuthRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ok => f.write_str("no password (trust)"),
            Self::Cleartext => f.write_str("a cleartext password"),
            Self::Md5 => f.write_str("an MD5 password"),
            Self::Sasl(m) => write!(f, "SASL authentication ({})", m.join(", ")),
            Self::Other(2) => f.write_str("Kerberos V5 authentication"),
            Self::Other(7) => f.write_str("GSSAPI authentication"),
            Self::Other(9) => f.write_str("SSPI authentication"),
            Self::Other(n) => write!(f, "authentication method {n}"),
        }
    }
}

/// Reads the body of an `R` message.
pub fn parse_auth(body: &[u8]) -> Option<AuthRequest> {
    if body.len() < 4 {
        return None;
    }
    Some(match be32(&body[0..4]) {
        0 => AuthRequest::Ok,
        3 => AuthRequest::Cleartext,
        5 => AuthRequest::Md5,
        10 => AuthRequest::Sasl(
            body[4..]
                .split(|&b| b == 0)
                .filter(|m| !m.is_empty())
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .collect(),
        ),
        n => AuthRequest::Other(n),
    })
}

/// A PasswordMessage (`p`) carrying `password`.
pub fn password_message(password: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(password.len() + 6);
    out.push(b'p');
    out.extend_from_slice(&((password.len() + 5) as u32).to_be_bytes());
    out.extend_from_slice(password.as_bytes());
    out.push(0);
    out
}

/// BackendKeyData (`K`): the session's process id and cancel key.
pub fn parse_backend_key(body: &[u8]) -> Option<CancelKey> {
    if body.len() < 8 || body.len() > 4 + MAX_CANCEL_KEY {
        return None;
    }
    Some(CancelKey {
        pid: be32(&body[0..4]),
        secret: body[4..].to_vec(),
    })
}

/// The fields of an ErrorResponse or NoticeResponse that the proxy reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

/// Reads an ErrorResponse (`E`) body.
pub fn parse_error(body: &[u8]) -> ErrorFields {
    let mut f = ErrorFields::default();
    for field in body.split(|&b| b == 0).filter(|x| !x.is_empty()) {
        let value = String::from_utf8_lossy(&field[1..]).into_owned();
        match field[0] {
            b'S' => f.severity = value,
            b'C' => f.code = value,
            b'M' => f.message = value,
            b'D' => f.detail = Some(value),
            b'H' => f.hint = Some(value),
            _ => {}
        }
    }
    f
}

/// SQLSTATE codes the proxy answers with.
pub mod sqlstate {
    /// The user in the StartupMessage is not the one the proxy serves.
    pub const INVALID_AUTHORIZATION: &str = "28000";
    /// The server asked for something other than a password.
    pub const INVALID_PASSWORD: &str = "28P01";
    /// The upstream cannot be reached, or TLS failed.
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const CANNOT_CONNECT: &str = "08001";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
}

/// A FATAL ErrorResponse (`E`) with SQLSTATE `code`, `message` and a hint.
pub fn error_response(code: &str, message: &str, hint: Option<&str>) -> Vec<u8> {
    let mut body = Vec::with_capacity(message.len() + 64);
    let mut field = |t: u8, v: &str| {
        body.push(t);
        // A NUL would end the field early; never let one through.
        body.extend(v.bytes().filter(|&b| b != 0));
        body.push(0);
    };
    field(b'S', "FATAL");
    field(b'V', "FATAL");
    field(b'C', code);
    field(b'M', message);
    if let Some(h) = hint {
        field(b'H', h);
    }
    body.push(0);
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(b'E');
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A StartupMessage as libpq 15 sends it, byte for byte.
    fn libpq_startup() -> Vec<u8> {
        let mut b = vec![0, 0, 0, 0, 0, 3, 0, 0];
        for s in [
            "user",
            "app_user",
            "database",
            "orders",
            "application_name",
            "psql",
            "options",
            "-c statement_timeout=5s",
        ] {
            b.extend_from_slice(s.as_bytes());
            b.push(0);
        }
        b.push(0);
        let len = b.len() as u32;
        b[0..4].copy_from_slice(&len.to_be_bytes());
        b
    }

    #[test]
    fn startup_parses_and_encodes_back_unchanged() {
        let raw = libpq_startup();
        let Parsed::Done(Initial::Startup(s), n) = parse_initial(&raw).unwrap() else {
            panic!("not a startup")
        };
        assert_eq!(n, raw.len());
        assert_eq!(s.version_string(), "3.0");
        assert_eq!(s.param("user"), Some("app_user"));
        assert_eq!(s.param("options"), Some("-c statement_timeout=5s"));
        assert_eq!(s.params.len(), 4);
        assert_eq!(s.encode(), raw);
    }

    #[test]
    fn incomplete_packets_ask_for_more() {
        let raw = libpq_startup();
        assert_eq!(parse_initial(&raw[..3]).unwrap(), Parsed::Incomplete(8));
        assert_eq!(
            parse_initial(&raw[..10]).unwrap(),
            Parsed::Incomplete(raw.len())
        );
    }

    #[test]
    fn negotiation_requests() {
        let ssl = ssl_request();
        assert_eq!(ssl, [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
        assert_eq!(
            parse_initial(&ssl).unwrap(),
            Parsed::Done(Initial::SslRequest, 8)
        );
        let gss = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
        assert_eq!(
            parse_initial(&gss).unwrap(),
            Parsed::Done(Initial::GssEncRequest, 8)
        );
    }

    #[test]
    fn cancel_requests_of_both_protocols() {
        // 3.0: 16 bytes, a 4-byte key.
        let key = CancelKey {
            pid: 4242,
            secret: vec![1, 2, 3, 4],
        };
        let raw = cancel_request(&key);
        assert_eq!(
            raw,
            [0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0x10, 0x92, 1, 2, 3, 4]
        );
        assert_eq!(
            parse_initial(&raw).unwrap(),
            Parsed::Done(Initial::Cancel(key), 16)
        );
        // 3.2: a 32-byte key.
        let long = CancelKey {
            pid: 7,
            secret: (0..32).collect(),
        };
        let raw = cancel_request(&long);
        assert_eq!(
            parse_initial(&raw).unwrap(),
            Parsed::Done(Initial::Cancel(long), 44)
        );
    }

    #[test]
    fn bad_packets_are_refused_with_a_reason() {
        let mut v2 = libpq_startup();
        v2[4..8].copy_from_slice(&(2u32 << 16).to_be_bytes());
        assert_eq!(
            parse_initial(&v2).unwrap_err().to_string(),
            "unsupported frontend protocol 2.0: the proxy accepts 3.0 and 3.2"
        );
        let mut v31 = libpq_startup();
        v31[4..8].copy_from_slice(&((3u32 << 16) | 1).to_be_bytes());
        assert!(matches!(
            parse_initial(&v31),
            Err(WireError::Version { major: 3, minor: 1 })
        ));
        assert_eq!(
            parse_initial(&[0, 0, 0, 4, 0, 3, 0, 0]),
            Err(WireError::BadLength(4))
        );
        assert_eq!(
            parse_initial(&[0, 1, 0, 0, 0, 3, 0, 0]),
            Err(WireError::BadLength(65536))
        );
        let mut no_term = libpq_startup();
        no_term.pop();
        let len = no_term.len() as u32;
        no_term[0..4].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(parse_initial(&no_term), Err(WireError::Layout(_))));
    }

    #[test]
    fn protocol_3_2_is_accepted() {
        let mut raw = libpq_startup();
        raw[4..8].copy_from_slice(&PROTOCOL_3_2.to_be_bytes());
        let Parsed::Done(Initial::Startup(s), _) = parse_initial(&raw).unwrap() else {
            panic!()
        };
        assert_eq!(s.version_string(), "3.2");
        assert_eq!(s.encode(), raw);
    }

    #[test]
    fn auth_requests() {
        assert_eq!(parse_auth(&[0, 0, 0, 3]), Some(AuthRequest::Cleartext));
        assert_eq!(parse_auth(&[0, 0, 0, 0]), Some(AuthRequest::Ok));
        assert_eq!(
            parse_auth(&[0, 0, 0, 5, 1, 2, 3, 4]),
            Some(AuthRequest::Md5)
        );
        let sasl = b"\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0";
        assert_eq!(
            parse_auth(sasl),
            Some(AuthRequest::Sasl(vec![
                "SCRAM-SHA-256-PLUS".into(),
                "SCRAM-SHA-256".into()
            ]))
        );
        assert_eq!(
            parse_auth(sasl).unwrap().to_string(),
            "SASL authentication (SCRAM-SHA-256-PLUS, SCRAM-SHA-256)"
        );
        assert_eq!(parse_auth(&[0, 0]), None);
    }

    #[test]
    fn password_message_layout() {
        assert_eq!(password_message("tok"), b"p\0\0\0\x08tok\0");
    }

    #[test]
    fn messages_split_and_are_bounded() {
        let buf = b"R\0\0\0\x08\0\0\0\x03Z\0\0\0\x05I";
        let Parsed::Done(m, n) = parse_message(buf, 100).unwrap() else {
            panic!()
        };
        assert_eq!((m.kind, m.body, n), (b'R', &[0u8, 0, 0, 3][..], 9));
        assert_eq!(
            parse_message(&buf[9..12], 100).unwrap(),
            Parsed::Incomplete(5)
        );
        assert!(matches!(
            parse_message(b"E\x7f\0\0\0", 100),
            Err(WireError::TooLong { kind: 'E', .. })
        ));
    }

    #[test]
    fn error_responses_round_trip() {
        let e = error_response("28000", "wrong user\0injected", Some("use app"));
        let Parsed::Done(m, n) = parse_message(&e, 1000).unwrap() else {
            panic!()
        };
        assert_eq!((m.kind, n), (b'E', e.len()));
        let f = parse_error(m.body);
        assert_eq!(f.severity, "FATAL");
        assert_eq!(f.code, "28000");
        assert_eq!(
            f.message, "wrong userinjected",
            "a NUL never splits a field"
        );
        assert_eq!(f.hint.as_deref(), Some("use app"));
    }

    #[test]
    fn backend_key() {
        assert_eq!(
            parse_backend_key(&[0, 0, 0, 9, 9, 8, 7, 6]),
            Some(CancelKey {
                pid: 9,
                secret: vec![9, 8, 7, 6]
            })
        );
        assert_eq!(parse_backend_key(&[0, 0, 0]), None);
    }
}
