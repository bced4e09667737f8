//! A minimal PostgreSQL frontend over a Unix socket or plain TCP, written
//! from the protocol documentation for the proxy tests: it sends exactly the
//! packets a test asks for (SSLRequest, GSSENCRequest, a 3.0 or 3.2
//! StartupMessage with any parameters, CancelRequest) and shows exactly what
//! came back (the answer byte, NegotiateProtocolVersion, BackendKeyData,
//! ErrorResponse fields), which the real clients hide. It shares no code with
//! the agent. No authentication: through the proxy none is asked.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// `SSLRequest` and `GSSENCRequest` codes.
pub const SSL_REQUEST: u32 = 80_877_103;
pub const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
/// Protocol 3.0 and 3.2.
pub const V3_0: u32 = 3 << 16;
pub const V3_2: u32 = (3 << 16) | 2;
/// No read waits longer than this, so a test never hangs.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Where to connect.
#[derive(Debug, Clone)]
pub enum Addr {
    /// A Unix socket file (e.g. `DIR/.s.PGSQL.5432`).
    Unix(PathBuf),
    /// 127.0.0.1:port.
    Tcp(u16),
}

impl Addr {
    /// The socket `.s.PGSQL.5432` in `dir`.
    pub fn socket_in(dir: &Path) -> Self {
        Self::Unix(dir.join(".s.PGSQL.5432"))
    }
}

/// A connected socket of either kind.
pub enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    pub fn open(addr: &Addr) -> std::io::Result<Conn> {
        let c = match addr {
            Addr::Unix(p) => Conn::Unix(UnixStream::connect(p)?),
            Addr::Tcp(port) => Conn::Tcp(TcpStream::connect(("127.0.0.1", *port))?),
        };
        c.set_timeout(Some(IO_TIMEOUT))?;
        Ok(c)
    }

    pub fn set_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Conn::Tcp(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.flush(),
            Conn::Tcp(s) => s.flush(),
        }
    }
}

/// The fields of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgError {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (HINT: {h})")?;
        }
        Ok(())
    }
}

fn parse_fields(body: &[u8]) -> PgError {
    let mut e = PgError::default();
    for field in body.split(|&b| b == 0).filter(|f| !f.is_empty()) {
        let v = String::from_utf8_lossy(&field[1..]).into_owned();
        match field[0] {
            b'S' => e.severity = v,
            b'C' => e.code = v,
            b'M' => e.message = v,
            b'D' => e.detail = Some(v),
            b'H' => e.hint = Some(v),
            _ => {}
        }
    }
    e
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// An untyped packet: length, code, body.
fn packet(code: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&((8 + body.len()) as u32).to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Reads one typed message: its type byte and body.
pub fn read_message(c: &mut Conn) -> Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    c.read_exact(&mut head)
        .context("reading a message header")?;
    let len = be32(&head[1..5]) as usize;
    if !(4..=64 * 1024 * 1024).contains(&len) {
        bail!("message {:?} has length {len}", head[0] as char);
    }
    let mut body = vec![0u8; len - 4];
    c.read_exact(&mut body).context("reading a message body")?;
    Ok((head[0], body))
}

/// Sends an SSLRequest or GSSENCRequest and returns the one-byte answer.
pub fn encryption_request(c: &mut Conn, code: u32) -> Result<u8> {
    c.write_all(&packet(code, &[]))?;
    let mut answer = [0u8; 1];
    c.read_exact(&mut answer)
        .context("reading the answer to an encryption request")?;
    Ok(answer[0])
}

/// Sends a CancelRequest for `pid` and `secret` on a new connection.
pub fn cancel(addr: &Addr, pid: u32, secret: &[u8]) -> Result<()> {
    let mut c = Conn::open(addr)?;
    let mut body = pid.to_be_bytes().to_vec();
    body.extend_from_slice(secret);
    c.write_all(&packet(CANCEL_REQUEST, &body))?;
    // The other side closes without a word.
    let mut sink = [0u8; 16];
    let n = c.read(&mut sink).unwrap_or(0);
    if n != 0 {
        bail!("a cancel request was answered with {n} bytes");
    }
    Ok(())
}

/// A logged-in session.
pub struct Session {
    pub conn: Conn,
    /// BackendKeyData as received.
    pub pid: u32,
    pub secret: Vec<u8>,
    /// ParameterStatus values.
    pub params: BTreeMap<String, String>,
    /// NegotiateProtocolVersion: the newest protocol version the server
    /// supports (e.g. [`V3_0`]) and the options it did not recognise.
    pub negotiated: Option<(u32, Vec<String>)>,
    /// Notifications received (channel, payload).
    pub notifications: Vec<(String, String)>,
}

/// A StartupMessage with `params` (in order) and protocol `version`, on
/// `conn`, then everything up to ReadyForQuery. `Ok(Err(e))` is an
/// ErrorResponse from the other side.
pub fn startup(
    mut conn: Conn,
    version: u32,
    params: &[(&str, &str)],
) -> Result<std::result::Result<Session, PgError>> {
    let mut body = Vec::new();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    conn.write_all(&packet(version, &body))?;
    let mut s = Session {
        conn,
        pid: 0,
        secret: Vec::new(),
        params: BTreeMap::new(),
        negotiated: None,
        notifications: Vec::new(),
    };
    loop {
        let (kind, body) = read_message(&mut s.conn)?;
        match kind {
            b'R' => {
                let code = be32(&body);
                if code != 0 {
                    bail!("the server asked for authentication method {code}");
                }
            }
            b'v' => {
                let newest = be32(&body[0..4]);
                let names = body[8..]
                    .split(|&b| b == 0)
                    .filter(|n| !n.is_empty())
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .collect();
                s.negotiated = Some((newest, names));
            }
            b'K' => {
                s.pid = be32(&body[0..4]);
                s.secret = body[4..].to_vec();
            }
            b'S' => {
                let mut parts = body.split(|&b| b == 0);
                let k = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                let v = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                s.params.insert(k, v);
            }
            b'N' => {}
            b'E' => return Ok(Err(parse_fields(&body))),
            b'Z' => return Ok(Ok(s)),
            other => bail!("unexpected message {:?} during startup", other as char),
        }
    }
}

/// Connects to `addr` and logs in as `user` to `database` with protocol 3.0.
pub fn login(
    addr: &Addr,
    user: &str,
    database: &str,
) -> Result<std::result::Result<Session, PgError>> {
    startup(
        Conn::open(addr)?,
        V3_0,
        &[("user", user), ("database", database)],
    )
}

/// Rows of a result, each column as text (`None` for NULL).
pub type Rows = Vec<Vec<Option<String>>>;

impl Session {
    /// Runs `sql` with the simple query protocol; the rows of the last
    /// result, or the ErrorResponse.
    pub fn query(&mut self, sql: &str) -> Result<std::result::Result<Rows, PgError>> {
        let mut msg = vec![b'Q'];
        msg.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
        msg.extend_from_slice(sql.as_bytes());
        msg.push(0);
        self.conn.write_all(&msg)?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (kind, body) = read_message(&mut self.conn)?;
            match kind {
                b'T' => rows.clear(),
                b'D' => rows.push(data_row(&body)?),
                b'E' => error = Some(parse_fields(&body)),
                b'A' => {
                    let mut parts = body[4..].split(|&b| b == 0);
                    let channel = String::from_utf8_lossy(parts.next().unwrap_or_default());
                    let payload = String::from_utf8_lossy(parts.next().unwrap_or_default());
                    self.notifications
                        .push((channel.into_owned(), payload.into_owned()));
                }
                b'Z' => return Ok(error.map_or(Ok(rows), Err)),
                _ => {}
            }
        }
    }

    /// The first column of the first row of `sql`; fails on an error.
    pub fn value(&mut self, sql: &str) -> Result<String> {
        let rows = match self.query(sql)? {
            Ok(r) => r,
            Err(e) => bail!("{sql}: {e}"),
        };
        rows.first()
            .and_then(|r| r.first().cloned().flatten())
            .with_context(|| format!("{sql}: no value"))
    }

    /// Sends Terminate and closes.
    pub fn terminate(mut self) {
        let _ = self.conn.write_all(&[b'X', 0, 0, 0, 4]);
    }
}

fn data_row(body: &[u8]) -> Result<Vec<Option<String>>> {
    let n = u16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = i32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
        at += 4;
        if len < 0 {
            out.push(None);
        } else {
            let len = len as usize;
            let Some(v) = body.get(at..at + len) else {
                bail!("a DataRow column runs past the message");
            };
            out.push(Some(String::from_utf8_lossy(v).into_owned()));
            at += len;
        }
    }
    Ok(out)
}

/// Reads what the other side sends before it closes: the ErrorResponse a
/// refused connection gets, or `None` for a close without a word.
pub fn read_refusal(c: &mut Conn) -> Result<Option<PgError>> {
    let mut first = [0u8; 1];
    match c.read(&mut first)? {
        0 => return Ok(None),
        _ if first[0] != b'E' => bail!("expected an ErrorResponse, got {:?}", first[0] as char),
        _ => {}
    }
    let mut len = [0u8; 4];
    c.read_exact(&mut len)?;
    let mut body = vec![0u8; (be32(&len) as usize).saturating_sub(4)];
    c.read_exact(&mut body)?;
    Ok(Some(parse_fields(&body)))
}
