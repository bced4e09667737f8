//! A fake MySQL server on 127.0.0.1 that records every byte a client sends
//! it, to prove who sends a password where: a real MariaDB 10.11 greeting
//! (written out byte by byte here, independent of the proxy's encoder)
//! without TLS, or with TLS offered but no TLS behind it.
//!
//! Without TLS it plays a server asking for the password in cleartext: it
//! reads the handshake response, asks for `mysql_clear_password`, and
//! records whatever comes until the client closes (or 3 s pass). With
//! [`FakeTls::Broken`] it answers an SSLRequest with bytes that are no TLS
//! record and closes.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;

/// What the fake offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeTls {
    /// No TLS capability in the greeting.
    NotOffered,
    /// TLS capability in the greeting, but garbage after the SSLRequest.
    Broken,
}

/// A running fake; stopped on drop.
pub struct FakeMysql {
    port: u16,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
}

/// `CLIENT_SSL`.
const SSL: u16 = 0x0800;

/// The greeting payload: protocol 10, MariaDB's version string, connection
/// id 7, a 20-byte scramble, MariaDB 10.11's capabilities (with or without
/// TLS, never compression), latin1, autocommit, MariaDB's extended
/// capabilities, `mysql_native_password`.
fn greeting(tls: FakeTls) -> Vec<u8> {
    let low: u16 = 0xf7de | if tls == FakeTls::Broken { SSL } else { 0 };
    let mut p = vec![10];
    p.extend_from_slice(b"5.5.5-10.11.19-MariaDB-fake\0");
    p.extend_from_slice(&7u32.to_le_bytes());
    p.extend_from_slice(b"abcdefgh\0");
    p.extend_from_slice(&low.to_le_bytes());
    p.push(8);
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&0x81ffu16.to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x1d, 0, 0, 0]);
    p.extend_from_slice(b"ijklmnopqrst\0");
    p.extend_from_slice(b"mysql_native_password\0");
    p
}

fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut out = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
    out.extend_from_slice(payload);
    out
}

impl FakeMysql {
    pub fn start(tls: FakeTls) -> Result<FakeMysql> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (rec, st) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let rec = rec.clone();
                std::thread::spawn(move || {
                    let got = serve(conn, tls);
                    rec.lock().unwrap_or_else(|e| e.into_inner()).push(got);
                });
            }
        });
        Ok(FakeMysql {
            port,
            received,
            stop,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything each finished connection sent after the greeting.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until `n` connections have finished; returns what each sent.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<Vec<u8>>> {
        let start = std::time::Instant::now();
        loop {
            let r = self.received();
            if r.len() >= n {
                return Ok(r);
            }
            if start.elapsed() > timeout {
                anyhow::bail!(
                    "{} connections finished within {timeout:?}, not {n}",
                    r.len()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether `haystack` holds `needle` (not empty).
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

impl Drop for FakeMysql {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One connection: greet, then record (see the module docs).
fn serve(mut conn: TcpStream, tls: FakeTls) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = conn.set_read_timeout(Some(Duration::from_secs(3)));
    if conn.write_all(&frame(0, &greeting(tls))).is_err() {
        return got;
    }
    // The first packet: a handshake response, or an SSLRequest.
    let mut head = [0u8; 4];
    if conn.read_exact(&mut head).is_err() {
        return got;
    }
    got.extend_from_slice(&head);
    let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
    let mut body = vec![0u8; len];
    if conn.read_exact(&mut body).is_err() {
        return got;
    }
    got.extend_from_slice(&body);
    if tls == FakeTls::Broken {
        let _ = conn.write_all(b"this is not a TLS record\r\n");
    } else {
        let switch = b"\xfemysql_clear_password\0";
        let _ = conn.write_all(&frame(head[3].wrapping_add(1), switch));
    }
    let mut buf = [0u8; 4096];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    got
}
