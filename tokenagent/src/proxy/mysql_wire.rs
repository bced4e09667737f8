//! The MySQL/MariaDB client/server protocol, as far as the proxy needs it for
//! the connection phase: pure functions over bytes, tested and fuzzed alone.
//!
//! A packet is `int<3> payload length` (little-endian), `int<1> sequence id`,
//! payload. The proxy reads the server's greeting (HandshakeV10), greets the
//! client with it (less TLS and compression), reads the client's
//! HandshakeResponse41 and sends it on over TLS.

/// Capability flags (`CLIENT_*`).
pub mod cap {
    /// Also MariaDB's "this is MySQL" bit (a MariaDB server clears it).
    pub const LONG_PASSWORD: u32 = 0x1;
    pub const CONNECT_WITH_DB: u32 = 0x8;
    pub const COMPRESS: u32 = 0x20;
    pub const PROTOCOL_41: u32 = 0x200;
    pub const SSL: u32 = 0x800;
    pub const SECURE_CONNECTION: u32 = 0x8000;
    pub const PLUGIN_AUTH: u32 = 0x8_0000;
    pub const CONNECT_ATTRS: u32 = 0x10_0000;
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x20_0000;
    pub const ZSTD_COMPRESSION: u32 = 0x400_0000;
}

/// The longest packet the proxy reads before the session starts.
pub const MAX_HANDSHAKE_PACKET: usize = 64 * 1024;
/// The authentication plugin that sends the password (the token) as is.
pub const CLEAR_PASSWORD: &str = "mysql_clear_password";

/// A malformed or unexpected packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MyWireError {
    #[error("packet of {len} bytes is longer than the {max} allowed during the handshake")]
    TooLong { len: usize, max: usize },
    #[error("malformed {what}: {why}")]
    Malformed {
        what: &'static str,
        why: &'static str,
    },
    #[error("server protocol version {0} is not 10")]
    Protocol(u8),
}

fn malformed(what: &'static str, why: &'static str) -> MyWireError {
    MyWireError::Malformed { what, why }
}

/// One packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    pub seq: u8,
    pub payload: &'a [u8],
}

/// How much of a buffer a parse needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    Incomplete(usize),
    Done(T, usize),
}

/// Splits one packet off `buf`.
pub fn parse_packet(buf: &[u8], max: usize) -> Result<Parsed<Packet<'_>>, MyWireError> {
    if buf.len() < 4 {
        return Ok(Parsed::Incomplete(4));
    }
    let len = usize::from(buf[0]) | usize::from(buf[1]) << 8 | usize::from(buf[2]) << 16;
    if len > max {
        return Err(MyWireError::TooLong { len, max });
    }
    if buf.len() < 4 + len {
        return Ok(Parsed::Incomplete(4 + len));
    }
    Ok(Parsed::Done(
        Packet {
            seq: buf[3],
            payload: &buf[4..4 + len],
        },
        4 + len,
    ))
}

/// Frames `payload` (under 16 MiB) with sequence id `seq`.
pub fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = Vec::with_capacity(len + 4);
    out.extend_from_slice(&[len as u8, (len >> 8) as u8, (len >> 16) as u8, seq]);
    out.extend_from_slice(payload);
    out
}

/// A cursor over a payload.
struct Reader<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MyWireError> {
        if self.b.len() < n {
            return Err(malformed(self.what, "it ends too early"));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, MyWireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, MyWireError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, MyWireError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn nul_str(&mut self) -> Result<&'a [u8], MyWireError> {
        let end = self
            .b
            .iter()
            .position(|&c| c == 0)
            .ok_or_else(|| malformed(self.what, "a string has no terminator"))?;
        let s = &self.b[..end];
        self.b = &self.b[end + 1..];
        Ok(s)
    }
    fn lenenc_int(&mut self) -> Result<u64, MyWireError> {
        Ok(match self.u8()? {
            n @ 0..=0xfa => u64::from(n),
            0xfc => u64::from(self.u16()?),
            0xfd => {
                let b = self.take(3)?;
                u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16
            }
            0xfe => {
                let b = self.take(8)?;
                u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            }
            _ => return Err(malformed(self.what, "an invalid length prefix")),
        })
    }
    fn lenenc_bytes(&mut self) -> Result<&'a [u8], MyWireError> {
        let n = self.lenenc_int()?;
        let n = usize::try_from(n).map_err(|_| malformed(self.what, "a length is too big"))?;
        self.take(n)
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.b)
    }
}

fn put_lenenc_int(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=0xfa => out.push(n as u8),
        0xfb..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

/// The server's greeting (Protocol::HandshakeV10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub server_version: Vec<u8>,
    pub connection_id: u32,
    /// The scramble (auth-plugin-data), both parts.
    pub auth_data: Vec<u8>,
    pub capabilities: u32,
    pub charset: u8,
    pub status: u16,
    /// The 10 reserved bytes; MariaDB keeps its extended capabilities in the
    /// last four.
    pub reserved: [u8; 10],
    pub auth_plugin: Option<Vec<u8>>,
}

/// Parses a greeting's payload.
pub fn parse_greeting(p: &[u8]) -> Result<Greeting, MyWireError> {
    let mut r = Reader {
        b: p,
        what: "server greeting",
    };
    let version = r.u8()?;
    if version != 10 {
        return Err(MyWireError::Protocol(version));
    }
    let server_version = r.nul_str()?.to_vec();
    let connection_id = r.u32()?;
    let mut auth_data = r.take(8)?.to_vec();
    r.take(1)?;
    let cap_low = u32::from(r.u16()?);
    let charset = r.u8()?;
    let status = r.u16()?;
    let capabilities = cap_low | u32::from(r.u16()?) << 16;
    let data_len = r.u8()?;
    let reserved: [u8; 10] = r
        .take(10)?
        .try_into()
        .map_err(|_| malformed("server greeting", "short reserved bytes"))?;
    if capabilities & cap::SECURE_CONNECTION != 0 {
        // Without CLIENT_PLUGIN_AUTH the length byte is not a length.
        let n = if capabilities & cap::PLUGIN_AUTH != 0 {
            usize::from(data_len).saturating_sub(8).max(13)
        } else {
            13
        };
        let part2 = r.take(n)?;
        // The second part is NUL-terminated inside its length.
        let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
        auth_data.extend_from_slice(part2);
    }
    let auth_plugin = if capabilities & cap::PLUGIN_AUTH != 0 {
        let rest = r.rest();
        Some(rest.strip_suffix(&[0]).unwrap_or(rest).to_vec())
    } else {
        None
    };
    Ok(Greeting {
        server_version,
        connection_id,
        auth_data,
        capabilities,
        charset,
        status,
        reserved,
        auth_plugin,
    })
}

impl Greeting {
    /// The greeting the client gets: the server's version, connection id,
    /// status, charset and capabilities, less TLS and compression, with the
    /// proxy's own scramble (the client sends no password to the proxy).
    pub fn for_client(&self, scramble: [u8; 20]) -> Greeting {
        Greeting {
            auth_data: scramble.to_vec(),
            capabilities: self.capabilities & !(cap::SSL | cap::COMPRESS | cap::ZSTD_COMPRESSION),
            auth_plugin: self
                .auth_plugin
                .as_ref()
                .map(|_| b"mysql_native_password".to_vec()),
            ..self.clone()
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.push(10);
        out.extend_from_slice(&self.server_version);
        out.push(0);
        out.extend_from_slice(&self.connection_id.to_le_bytes());
        let (part1, part2) = self.auth_data.split_at(self.auth_data.len().min(8));
        out.extend_from_slice(part1);
        out.extend(std::iter::repeat_n(0, 8 - part1.len()));
        out.push(0);
        out.extend_from_slice(&(self.capabilities as u16).to_le_bytes());
        out.push(self.charset);
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&((self.capabilities >> 16) as u16).to_le_bytes());
        let secure = self.capabilities & cap::SECURE_CONNECTION != 0;
        let with_plugin = self.capabilities & cap::PLUGIN_AUTH != 0;
        // The length counts the second part's NUL while one byte can hold it.
        let counted = with_plugin && self.auth_data.len() < 255;
        out.push(if with_plugin {
            (self.auth_data.len() + 1).min(255) as u8
        } else {
            0
        });
        out.extend_from_slice(&self.reserved);
        if secure {
            out.extend_from_slice(part2);
            out.extend(std::iter::repeat_n(0, 12usize.saturating_sub(part2.len())));
            if counted || !with_plugin {
                out.push(0);
            }
        }
        if let Some(p) = self.auth_plugin.as_ref().filter(|_| with_plugin) {
            out.extend_from_slice(p);
            out.push(0);
        }
        out
    }
}

/// The client's HandshakeResponse41.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub capabilities: u32,
    pub max_packet: u32,
    pub charset: u8,
    /// 23 bytes; MariaDB clients put their extended capabilities in the last 4.
    pub filler: [u8; 23],
    pub user: Vec<u8>,
    pub auth_response: Vec<u8>,
    pub database: Option<Vec<u8>>,
    pub auth_plugin: Option<Vec<u8>>,
    /// Connection attributes, raw (kept as the client sent them).
    pub attrs: Option<Vec<u8>>,
    /// Anything after (e.g. a zstd level); kept as is.
    pub trailing: Vec<u8>,
}

/// What the client sent first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHello {
    /// A short SSLRequest: the client wants TLS, which the proxy never offers.
    SslRequest,
    Response(HandshakeResponse),
}

/// Parses the client's first packet after the greeting.
pub fn parse_client_hello(p: &[u8]) -> Result<ClientHello, MyWireError> {
    let what = "client handshake response";
    let mut r = Reader { b: p, what };
    let capabilities = r.u32()?;
    if capabilities & cap::PROTOCOL_41 == 0 {
        return Err(malformed(what, "protocol 4.1 is required"));
    }
    let max_packet = r.u32()?;
    let charset = r.u8()?;
    let filler: [u8; 23] = r
        .take(23)?
        .try_into()
        .map_err(|_| malformed(what, "short filler"))?;
    if r.b.is_empty() && capabilities & cap::SSL != 0 {
        return Ok(ClientHello::SslRequest);
    }
    let user = r.nul_str()?.to_vec();
    let auth_response = if capabilities & cap::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        r.lenenc_bytes()?.to_vec()
    } else if capabilities & cap::SECURE_CONNECTION != 0 {
        let n = usize::from(r.u8()?);
        r.take(n)?.to_vec()
    } else {
        r.nul_str()?.to_vec()
    };
    let database = if capabilities & cap::CONNECT_WITH_DB != 0 && !r.b.is_empty() {
        Some(r.nul_str()?.to_vec())
    } else {
        None
    };
    let auth_plugin = if capabilities & cap::PLUGIN_AUTH != 0 && !r.b.is_empty() {
        Some(r.nul_str()?.to_vec())
    } else {
        None
    };
    let attrs = if capabilities & cap::CONNECT_ATTRS != 0 && !r.b.is_empty() {
        Some(r.lenenc_bytes()?.to_vec())
    } else {
        None
    };
    Ok(ClientHello::Response(HandshakeResponse {
        capabilities,
        max_packet,
        charset,
        filler,
        user,
        auth_response,
        database,
        auth_plugin,
        attrs,
        trailing: r.rest().to_vec(),
    }))
}

impl HandshakeResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&self.capabilities.to_le_bytes());
        out.extend_from_slice(&self.max_packet.to_le_bytes());
        out.push(self.charset);
        out.extend_from_slice(&self.filler);
        out.extend_from_slice(&self.user);
        out.push(0);
        if self.capabilities & cap::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            put_lenenc_int(&mut out, self.auth_response.len() as u64);
            out.extend_from_slice(&self.auth_response);
        } else if self.capabilities & cap::SECURE_CONNECTION != 0 {
            out.push(self.auth_response.len().min(255) as u8);
            out.extend_from_slice(&self.auth_response[..self.auth_response.len().min(255)]);
        } else {
            out.extend_from_slice(&self.auth_response);
            out.push(0);
        }
        if let Some(db) = self
            .database
            .as_ref()
            .filter(|_| self.capabilities & cap::CONNECT_WITH_DB != 0)
        {
            out.extend_from_slice(db);
            out.push(0);
        }
        if let Some(p) = self
            .auth_plugin
            .as_ref()
            .filter(|_| self.capabilities & cap::PLUGIN_AUTH != 0)
        {
            out.extend_from_slice(p);
            out.push(0);
        }
        if let Some(a) = self
            .attrs
            .as_ref()
            .filter(|_| self.capabilities & cap::CONNECT_ATTRS != 0)
        {
            put_lenenc_int(&mut out, a.len() as u64);
            out.extend_from_slice(a);
        }
        out.extend_from_slice(&self.trailing);
        out
    }

    /// The SSLRequest that starts TLS upstream: the first 32 bytes of this
    /// response, with the SSL flag.
    pub fn ssl_request(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.extend_from_slice(&(self.capabilities | cap::SSL).to_le_bytes());
        out.extend_from_slice(&self.max_packet.to_le_bytes());
        out.push(self.charset);
        out.extend_from_slice(&self.filler);
        out
    }
}

/// What the server answers during authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthReply {
    Ok,
    Err(ErrPacket),
    /// An AuthSwitchRequest (`0xFE`): the plugin and its data.
    Switch {
        plugin: Vec<u8>,
        data: Vec<u8>,
    },
    /// AuthMoreData (`0x01`), e.g. of caching_sha2_password.
    More(Vec<u8>),
}

/// Reads a server reply during authentication.
pub fn parse_auth_reply(p: &[u8]) -> Result<AuthReply, MyWireError> {
    let what = "authentication reply";
    match p.first() {
        Some(0x00) => Ok(AuthReply::Ok),
        Some(0xff) => Ok(AuthReply::Err(parse_err(p)?)),
        Some(0xfe) => {
            let mut r = Reader { b: &p[1..], what };
            let plugin = if r.b.is_empty() {
                // The old, pre-plugin switch: mysql_old_password.
                b"mysql_old_password".to_vec()
            } else {
                r.nul_str()?.to_vec()
            };
            Ok(AuthReply::Switch {
                plugin,
                data: r.rest().to_vec(),
            })
        }
        Some(0x01) => Ok(AuthReply::More(p[1..].to_vec())),
        _ => Err(malformed(what, "unknown packet type")),
    }
}

/// An ERR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket {
    pub code: u16,
    pub sqlstate: String,
    pub message: String,
}

pub fn parse_err(p: &[u8]) -> Result<ErrPacket, MyWireError> {
    let mut r = Reader {
        b: p,
        what: "error packet",
    };
    if r.u8()? != 0xff {
        return Err(malformed("error packet", "it does not start with 0xFF"));
    }
    let code = r.u16()?;
    let mut sqlstate = String::from("HY000");
    if r.b.first() == Some(&b'#') {
        r.take(1)?;
        sqlstate = String::from_utf8_lossy(r.take(5)?).into_owned();
    }
    Ok(ErrPacket {
        code,
        sqlstate,
        message: String::from_utf8_lossy(r.rest()).into_owned(),
    })
}

/// Error codes the proxy answers with: server errors only. A client takes
/// a code of its own range (2000-2999, `CR_*`) from a server as a broken
/// packet: MariaDB Connector/C reports `2027 Received malformed packet`
/// instead of the message.
pub mod code {
    /// ER_ACCESS_DENIED_ERROR, SQLSTATE 28000.
    pub const ACCESS_DENIED: u16 = 1045;
    /// ER_CON_COUNT_ERROR, SQLSTATE 08004.
    pub const TOO_MANY_CONNECTIONS: u16 = 1040;
    /// ER_HANDSHAKE_ERROR, SQLSTATE 08S01: the client's handshake, and TLS
    /// to the database (not offered, or its handshake failed).
    pub const HANDSHAKE: u16 = 1043;
    /// ER_UNKNOWN_ERROR, SQLSTATE 08S01: the database cannot be reached, or
    /// the agent has no token for it yet.
    pub const UNAVAILABLE: u16 = 1105;
    /// Every code above.
    pub const ALL: [u16; 4] = [ACCESS_DENIED, TOO_MANY_CONNECTIONS, HANDSHAKE, UNAVAILABLE];
}

/// An ERR packet's payload (4.1 format, with a SQLSTATE).
pub fn err_payload(code: u16, sqlstate: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 9);
    out.push(0xff);
    out.extend_from_slice(&code.to_le_bytes());
    out.push(b'#');
    let mut state = [b'H', b'Y', b'0', b'0', b'0'];
    for (d, s) in state.iter_mut().zip(sqlstate.bytes()) {
        *d = s;
    }
    out.extend_from_slice(&state);
    out.extend_from_slice(message.as_bytes());
    out
}

/// The answer to a mysql_clear_password request: the password and a NUL.
pub fn clear_password(token: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(token.len() + 1);
    out.extend_from_slice(token.as_bytes());
    out.push(0);
    out
}

/// Whether the upstream offers TLS at all.
pub fn offers_tls(g: &Greeting) -> bool {
    g.capabilities & cap::SSL != 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A MariaDB 10.11 greeting, as captured from Debian's server.
    fn mariadb_greeting() -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"5.5.5-10.11.6-MariaDB-0+deb12u1\0");
        p.extend_from_slice(&42u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh\0");
        let caps: u32 = 0xf7fe | (0x81bf << 16) | cap::SSL;
        p.extend_from_slice(&(caps as u16).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x1d, 0, 0, 0]);
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }

    #[test]
    fn greeting_parses_and_encodes_back() {
        let raw = mariadb_greeting();
        let g = parse_greeting(&raw).unwrap();
        assert_eq!(g.server_version, b"5.5.5-10.11.6-MariaDB-0+deb12u1");
        assert_eq!(g.connection_id, 42);
        assert_eq!(g.auth_data, b"abcdefghijklmnopqrst");
        assert_eq!(
            g.auth_plugin.as_deref(),
            Some(&b"mysql_native_password"[..])
        );
        assert_eq!(
            g.reserved[6], 0x1d,
            "MariaDB's extended capabilities are kept"
        );
        assert!(offers_tls(&g));
        assert_eq!(g.encode(), raw);
    }

    /// Found by the mysql_handshake fuzz target: greetings that parsed but
    /// did not encode back to the same value.
    #[test]
    fn odd_scramble_lengths_encode_back() {
        // A length byte without CLIENT_PLUGIN_AUTH: the second part is 13 bytes.
        let mut p = mariadb_greeting();
        let caps = cap::PROTOCOL_41 | cap::SECURE_CONNECTION;
        p[46..48].copy_from_slice(&(caps as u16).to_le_bytes());
        p[51..53].copy_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p[53] = 45;
        let g = parse_greeting(&p).unwrap();
        assert_eq!(g.auth_data, b"abcdefghijklmnopqrst");
        assert_eq!(g.auth_plugin, None);
        assert_eq!(parse_greeting(&g.encode()).unwrap(), g);
        // The longest second part (247 bytes, no NUL) with a plugin.
        let mut p = mariadb_greeting();
        p.truncate(64);
        p[53] = 255;
        p.extend(std::iter::repeat_n(b'x', 247));
        p.extend_from_slice(b"mysql_native_password\0");
        let g = parse_greeting(&p).unwrap();
        assert_eq!(g.auth_data.len(), 255);
        assert_eq!(g.encode(), p);
        assert_eq!(parse_greeting(&g.encode()).unwrap(), g);
    }

    #[test]
    fn the_client_is_not_offered_tls_or_compression() {
        let mut g = parse_greeting(&mariadb_greeting()).unwrap();
        g.capabilities |= cap::COMPRESS | cap::ZSTD_COMPRESSION;
        let c = g.for_client([7; 20]);
        assert_eq!(
            c.capabilities & (cap::SSL | cap::COMPRESS | cap::ZSTD_COMPRESSION),
            0
        );
        assert_eq!(c.connection_id, 42, "KILL QUERY <id> needs the real id");
        assert_eq!(c.server_version, g.server_version);
        let back = parse_greeting(&c.encode()).unwrap();
        assert_eq!(back, c);
    }

    /// A mysql 8 client's response with db, plugin and attributes.
    fn client_response() -> HandshakeResponse {
        HandshakeResponse {
            capabilities: cap::PROTOCOL_41
                | cap::SECURE_CONNECTION
                | cap::PLUGIN_AUTH
                | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA
                | cap::CONNECT_WITH_DB
                | cap::CONNECT_ATTRS
                | cap::LONG_PASSWORD,
            max_packet: 16 << 20,
            charset: 45,
            filler: [0; 23],
            user: b"app_user".to_vec(),
            auth_response: vec![],
            database: Some(b"orders".to_vec()),
            auth_plugin: Some(b"mysql_native_password".to_vec()),
            attrs: Some(b"\x0c_client_name\x08libmysql".to_vec()),
            trailing: vec![],
        }
    }

    #[test]
    fn responses_round_trip() {
        let r = client_response();
        let raw = r.encode();
        assert_eq!(
            parse_client_hello(&raw).unwrap(),
            ClientHello::Response(r.clone())
        );
        // Without the optional parts.
        let mut bare = r;
        bare.capabilities = cap::PROTOCOL_41 | cap::SECURE_CONNECTION;
        bare.database = None;
        bare.auth_plugin = None;
        bare.attrs = None;
        bare.auth_response = vec![1, 2, 3];
        assert_eq!(
            parse_client_hello(&bare.encode()).unwrap(),
            ClientHello::Response(bare)
        );
    }

    #[test]
    fn ssl_request_is_recognised() {
        let r = client_response();
        let ssl = r.ssl_request();
        assert_eq!(ssl.len(), 32);
        assert_eq!(parse_client_hello(&ssl).unwrap(), ClientHello::SslRequest);
    }

    #[test]
    fn auth_replies() {
        assert_eq!(
            parse_auth_reply(&[0, 0, 0, 2, 0, 0, 0]).unwrap(),
            AuthReply::Ok
        );
        assert_eq!(
            parse_auth_reply(b"\xfemysql_clear_password\0").unwrap(),
            AuthReply::Switch {
                plugin: CLEAR_PASSWORD.as_bytes().to_vec(),
                data: vec![]
            }
        );
        assert_eq!(
            parse_auth_reply(b"\xfecaching_sha2_password\0salt").unwrap(),
            AuthReply::Switch {
                plugin: b"caching_sha2_password".to_vec(),
                data: b"salt".to_vec()
            }
        );
        let e = err_payload(code::ACCESS_DENIED, "28000", "Access denied for user 'a'");
        assert_eq!(
            parse_auth_reply(&e).unwrap(),
            AuthReply::Err(ErrPacket {
                code: 1045,
                sqlstate: "28000".into(),
                message: "Access denied for user 'a'".into()
            })
        );
        assert!(parse_auth_reply(&[0x42]).is_err());
    }

    #[test]
    fn packets_frame_and_are_bounded() {
        let p = packet(3, b"hello");
        assert_eq!(p, [5, 0, 0, 3, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(
            parse_packet(&p, 100).unwrap(),
            Parsed::Done(
                Packet {
                    seq: 3,
                    payload: b"hello"
                },
                9
            )
        );
        assert_eq!(parse_packet(&p[..6], 100).unwrap(), Parsed::Incomplete(9));
        assert!(matches!(
            parse_packet(&[0xff, 0xff, 0xff, 0], 1000),
            Err(MyWireError::TooLong { .. })
        ));
    }

    #[test]
    fn error_codes_are_server_errors() {
        for c in code::ALL {
            assert!((1000..2000).contains(&c), "{c} is not a server error code");
        }
    }

    /// Packets of the connection phase to mutate: a greeting, a client's
    /// response, an SSLRequest, an ERR, an auth switch, an OK.
    fn seeds() -> Vec<Vec<u8>> {
        vec![
            mariadb_greeting(),
            client_response().encode(),
            client_response().ssl_request(),
            err_payload(code::ACCESS_DENIED, "28000", "Access denied"),
            b"\xfemysql_clear_password\0".to_vec(),
            vec![0, 0, 0, 2, 0, 0, 0],
        ]
    }

    /// Arbitrary bytes, or a seed with bytes overwritten and maybe cut.
    fn input() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            (
                0..seeds().len(),
                proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
                proptest::option::of(any::<usize>()),
            )
                .prop_map(|(i, edits, cut)| {
                    let mut b = seeds().swap_remove(i);
                    for (at, v) in edits {
                        let n = b.len();
                        b[at % n] = v;
                    }
                    if let Some(cut) = cut {
                        b.truncate(cut % (b.len() + 1));
                    }
                    b
                }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(rds_iam_common::fuzz_cases(20_000)))]

        /// No input makes a parser panic; what parses encodes back to the
        /// same value, also after the proxy's changes; the SSLRequest sent
        /// upstream is always read as one.
        #[test]
        fn handshake_parsers_fuzz(b in input()) {
            use proptest::prop_assert_eq;
            if let Ok(Parsed::Done(p, n)) = parse_packet(&b, 1 << 24) {
                prop_assert_eq!(n, 4 + p.payload.len());
                proptest::prop_assert!(n <= b.len());
            }
            if let Ok(g) = parse_greeting(&b) {
                if g.capabilities & cap::SECURE_CONNECTION != 0 {
                    let c = g.for_client([7; 20]);
                    prop_assert_eq!(c.capabilities & (cap::SSL | cap::COMPRESS | cap::ZSTD_COMPRESSION), 0);
                    prop_assert_eq!(parse_greeting(&c.encode()), Ok(c));
                }
            }
            if let Ok(ClientHello::Response(r)) = parse_client_hello(&b) {
                prop_assert_eq!(parse_client_hello(&r.encode()), Ok(ClientHello::Response(r.clone())));
                let mut up = r;
                up.capabilities = (up.capabilities | cap::SSL) & !(cap::COMPRESS | cap::ZSTD_COMPRESSION);
                up.user = b"app_user".to_vec();
                up.auth_response = Vec::new();
                prop_assert_eq!(parse_client_hello(&up.ssl_request()), Ok(ClientHello::SslRequest));
                prop_assert_eq!(parse_client_hello(&up.encode()), Ok(ClientHello::Response(up)));
            }
            let _ = parse_auth_reply(&b);
            let _ = parse_err(&b);
        }
    }

    #[test]
    fn lenenc_ints() {
        for n in [0u64, 250, 251, 65535, 65536, 0xff_ffff, 0x100_0000] {
            let mut b = Vec::new();
            put_lenenc_int(&mut b, n);
            let mut r = Reader { b: &b, what: "t" };
            assert_eq!(r.lenenc_int().unwrap(), n);
            assert!(r.b.is_empty());
        }
    }
}
