//! The proxy's PostgreSQL parsers (`proxy::pg_wire`): the client's first
//! packet, and the typed messages read before the session is spliced.
//!
//! The same bytes go to every parser.
//!
//! Invariants: nothing panics. `parse_initial`: `Incomplete(n)` asks for
//! more than it has and at most `MAX_STARTUP_LEN`; `Done` takes 8 to
//! `MAX_STARTUP_LEN` bytes that the parsed value encodes back to exactly
//! (a StartupMessage, a CancelRequest, an SSLRequest, a GSSENCRequest);
//! any shorter prefix of those bytes is `Incomplete`; a StartupMessage has
//! distinct non-empty parameter names. `parse_message` splits the buffer
//! into messages of at most `MAX_PRE_SESSION_MESSAGE` bytes and asks for
//! no more than that; a BackendKeyData key is 4 to 256 bytes; an
//! authentication request reads as such exactly when it has its 4-byte
//! code. An ErrorResponse the proxy writes reads back with its fields.

use rds_iam_tokenagent::proxy::pg_wire::{
    cancel_request, error_response, parse_auth, parse_backend_key, parse_error, parse_initial,
    parse_message, ssl_request, Initial, Parsed, GSSENC_REQUEST, MAX_CANCEL_KEY,
    MAX_PRE_SESSION_MESSAGE, MAX_STARTUP_LEN, PROTOCOL_3_0, PROTOCOL_3_2,
};

pub fn check(data: &[u8]) {
    initial(data);
    messages(data);
    written_errors(data);
}

fn initial(buf: &[u8]) {
    let (value, used) = match parse_initial(buf) {
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
        Ok(Parsed::Incomplete(n)) => {
            assert!(
                n > buf.len() && n <= MAX_STARTUP_LEN,
                "Incomplete({n}) of {}",
                buf.len()
            );
            return;
        }
        Ok(Parsed::Done(value, used)) => (value, used),
    };
    assert!(
        (8..=MAX_STARTUP_LEN).contains(&used) && used <= buf.len(),
        "{used}"
    );
    let raw = &buf[..used];
    let encoded = match &value {
        Initial::Startup(s) => {
            assert!(
                s.version == PROTOCOL_3_0 || s.version == PROTOCOL_3_2,
                "{s:?}"
            );
            for (i, (k, v)) in s.params.iter().enumerate() {
                assert!(
                    !k.is_empty() && !k.contains('\0') && !v.contains('\0'),
                    "{s:?}"
                );
                assert!(s.params[..i].iter().all(|(o, _)| o != k), "{k:?} twice");
            }
            s.encode()
        }
        Initial::Cancel(key) => {
            assert!((4..=MAX_CANCEL_KEY).contains(&key.secret.len()), "{key:?}");
            cancel_request(key)
        }
        Initial::SslRequest => ssl_request().to_vec(),
        Initial::GssEncRequest => {
            let mut b = 8u32.to_be_bytes().to_vec();
            b.extend_from_slice(&GSSENC_REQUEST.to_be_bytes());
            b
        }
    };
    assert_eq!(encoded, raw, "{value:?}");
    for cut in [used - 1, used / 2, 7] {
        match parse_initial(&raw[..cut]) {
            Ok(Parsed::Incomplete(n)) => assert!(n > cut && n <= used, "{n} for {cut} of {used}"),
            other => panic!("a prefix of {cut} of {used} bytes gave {other:?}"),
        }
    }
}

fn messages(buf: &[u8]) {
    let mut rest = buf;
    loop {
        let (m, n) = match parse_message(rest, MAX_PRE_SESSION_MESSAGE) {
            Err(_) => return,
            Ok(Parsed::Incomplete(n)) => {
                assert!(n > rest.len() && n <= 1 + MAX_PRE_SESSION_MESSAGE, "{n}");
                return;
            }
            Ok(Parsed::Done(m, n)) => (m, n),
        };
        assert_eq!(n, 5 + m.body.len());
        assert!(n <= rest.len() && m.body.len() + 4 <= MAX_PRE_SESSION_MESSAGE);
        assert_eq!(&rest[5..n], m.body);
        assert_eq!(parse_auth(m.body).is_some(), m.body.len() >= 4);
        if let Some(auth) = parse_auth(m.body) {
            assert!(!auth.to_string().is_empty());
        }
        if let Some(key) = parse_backend_key(m.body) {
            assert_eq!(key.secret.len() + 4, m.body.len());
            assert!((4..=MAX_CANCEL_KEY).contains(&key.secret.len()));
        }
        let _ = parse_error(m.body);
        rest = &rest[n..];
    }
}

/// The proxy's own ErrorResponse, with text from the input.
fn written_errors(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (message, hint) = text.split_once('\u{1}').unwrap_or((&text, ""));
    let hint = Some(hint).filter(|h| !h.is_empty());
    let e = error_response("08P01", message, hint);
    let Ok(Parsed::Done(m, n)) = parse_message(&e, usize::MAX) else {
        panic!("an ErrorResponse the proxy writes does not read back")
    };
    assert_eq!((m.kind, n), (b'E', e.len()));
    let f = parse_error(m.body);
    let no_nul = |s: &str| s.replace('\0', "");
    assert_eq!(f.severity, "FATAL");
    assert_eq!(f.code, "08P01");
    assert_eq!(f.message, no_nul(message));
    assert_eq!(f.hint, hint.map(no_nul));
}
