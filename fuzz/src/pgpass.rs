//! The pgpass writer, `rds_iam_tokenagent::pgpass::line`, read back two
//! ways: by the agent's own reader (`parse_line`, used by `probe` and
//! `doctor`) and by a model of libpq's `passwordFromFile` and
//! `pwdfMatchesString` (PostgreSQL's `src/interfaces/libpq/fe-connect.c`),
//! written here from libpq's rules and independent of the agent's code.
//!
//! Input: a big-endian port in the first two bytes, then host, user and
//! token separated by 0xFF bytes.
//!
//! Invariants: a refusal names a field that really holds a line break or a
//! NUL (which would end libpq's line early); an
//! accepted entry is exactly one line; `parse_line` gives back exactly the
//! fields; libpq, connecting to that host and port as that user (to any
//! database), reads exactly the token from it, and no other user or host
//! gets anything from it.

use rds_iam_tokenagent::pgpass::{line, parse_line, PgpassError};

pub fn check(data: &[u8]) {
    let (port, rest) = match data {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
        _ => return,
    };
    let [host, user, token] = super::split_fields::<3>(rest).map(String::from_utf8_lossy);
    let entry = match line(&host, port, &user, &token) {
        Ok(l) => l,
        Err(e) => {
            let (field, bad): (_, &[char]) = match e {
                PgpassError::LineBreak { field } => (field, &['\n', '\r']),
                PgpassError::Nul { field } => (field, &['\0']),
            };
            let value = match field {
                "host" => &host,
                "user" => &user,
                "token" => &token,
                other => panic!("{e} names no field: {other}"),
            };
            assert!(value.contains(bad), "{e}: {value:?}");
            return;
        }
    };
    assert!(entry.ends_with('\n'), "{entry:?}");
    assert_eq!(entry.matches('\n').count(), 1, "{entry:?}");
    assert!(!entry.contains('\r'), "{entry:?}");

    let port = port.to_string();
    let want = [&*host, &port, "*", &*user, &*token].map(String::from);
    assert_eq!(parse_line(&entry), Some(want), "{entry:?}");

    for db in ["postgres", "app"] {
        assert_eq!(
            libpq::password(&entry, &host, &port, db, &user).as_deref(),
            Some(&*token),
            "libpq reads {entry:?} differently"
        );
    }
    let other_user = format!("{user}x");
    let other_host = format!("{host}x");
    assert_eq!(
        libpq::password(&entry, &host, &port, "app", &other_user),
        None,
        "{entry:?}"
    );
    assert_eq!(
        libpq::password(&entry, &other_host, &port, "app", &user),
        None,
        "{entry:?}"
    );
}

/// What libpq does with one pgpass line, byte for byte.
mod libpq {
    /// `passwordFromFile` for a file holding `file`: the password for the
    /// connection, if the (only) line matches.
    pub fn password(file: &str, host: &str, port: &str, db: &str, user: &str) -> Option<String> {
        // fgets() then strlen(): a NUL ends the line's text; the line then
        // has no newline, so libpq reads on and appends the next line
        // (there is none here).
        let bytes = file.as_bytes();
        let text = &bytes[..bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())];
        // Comments.
        if text.first() == Some(&b'#') {
            return None;
        }
        // pg_strip_crlf: every trailing CR and LF.
        let mut end = text.len();
        while end > 0 && matches!(text[end - 1], b'\n' | b'\r') {
            end -= 1;
        }
        let t = &text[..end];
        if t.is_empty() {
            return None;
        }
        let t = matches(t, host.as_bytes())?;
        let t = matches(t, port.as_bytes())?;
        let t = matches(t, db.as_bytes())?;
        let t = matches(t, user.as_bytes())?;
        // De-escape the password up to an unescaped ':' or the end.
        let mut out = Vec::new();
        let mut i = 0;
        while i < t.len() && t[i] != b':' {
            if t[i] == b'\\' && i + 1 < t.len() {
                i += 1;
            }
            out.push(t[i]);
            i += 1;
        }
        Some(String::from_utf8_lossy(&out).into_owned())
    }

    /// `pwdfMatchesString`: the rest of the line after a field that matches
    /// `token` (`*` matches anything), or `None`.
    fn matches<'a>(buf: &'a [u8], token: &[u8]) -> Option<&'a [u8]> {
        if buf.starts_with(b"*:") {
            return Some(&buf[2..]);
        }
        let (mut b, mut k) = (0, 0);
        let mut bslash = false;
        while b < buf.len() {
            if buf[b] == b'\\' && !bslash {
                b += 1;
                bslash = true;
            }
            // The C string ends at index len with a NUL.
            let cur = buf.get(b).copied().unwrap_or(0);
            let tok = token.get(k).copied().unwrap_or(0);
            if cur == b':' && tok == 0 && !bslash {
                return Some(&buf[b + 1..]);
            }
            bslash = false;
            if tok == 0 {
                return None;
            }
            if cur == tok {
                b += 1;
                k += 1;
            } else {
                return None;
            }
        }
        None
    }
}
