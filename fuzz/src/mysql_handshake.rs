//! The proxy's MySQL/MariaDB connection-phase parsers
//! (`proxy::mysql_wire`): packets, the server's greeting, the client's
//! handshake response, authentication replies and ERR packets.
//!
//! The input is read both as a stream of packets (each payload going to
//! every payload parser) and as one payload.
//!
//! Invariants: nothing panics. `parse_packet` asks for more than it has
//! and at most a header plus `MAX_HANDSHAKE_PACKET`, and frames back to the
//! bytes it took. A parsed greeting encodes and parses back to an equal
//! value, and so does the greeting the client gets (`for_client`), which
//! offers neither TLS nor compression. A parsed handshake response encodes
//! and parses back to an equal value, also as the proxy rewrites it for
//! upstream (TLS on, compression off, the served user), and its
//! SSLRequest reads as one. An ERR packet keeps its code, a five-character
//! SQLSTATE and the message; one the proxy writes reads back.

use rds_iam_tokenagent::proxy::mysql_wire::{
    cap, err_payload, packet, parse_auth_reply, parse_client_hello, parse_err, parse_greeting,
    parse_packet, AuthReply, ClientHello, Parsed, MAX_HANDSHAKE_PACKET,
};

pub fn check(data: &[u8]) {
    payload(data);
    let mut rest = data;
    loop {
        let (p, n) = match parse_packet(rest, MAX_HANDSHAKE_PACKET) {
            Err(_) => break,
            Ok(Parsed::Incomplete(n)) => {
                assert!(n > rest.len() && n <= 4 + MAX_HANDSHAKE_PACKET, "{n}");
                break;
            }
            Ok(Parsed::Done(p, n)) => (p, n),
        };
        assert_eq!(n, 4 + p.payload.len());
        assert_eq!(packet(p.seq, p.payload), &rest[..n]);
        payload(p.payload);
        rest = &rest[n..];
    }
    written_err(data);
}

fn payload(p: &[u8]) {
    greeting(p);
    client_hello(p);
    auth_reply(p);
}

fn greeting(p: &[u8]) {
    let Ok(g) = parse_greeting(p) else { return };
    assert_eq!(parse_greeting(&g.encode()).as_ref(), Ok(&g), "{g:?}");
    let scramble: [u8; 20] = std::array::from_fn(|i| 1 + i as u8);
    let mut c = g.for_client(scramble);
    assert_eq!(
        c.capabilities & (cap::SSL | cap::COMPRESS | cap::ZSTD_COMPRESSION),
        0
    );
    assert_eq!(c.connection_id, g.connection_id);
    if c.capabilities & cap::SECURE_CONNECTION == 0 {
        // A pre-4.1 greeting carries only the first 8 bytes of a scramble.
        c.auth_data.truncate(8);
    }
    assert_eq!(parse_greeting(&c.encode()).as_ref(), Ok(&c), "{c:?}");
}

fn client_hello(p: &[u8]) {
    let r = match parse_client_hello(p) {
        Ok(ClientHello::Response(r)) => r,
        Ok(ClientHello::SslRequest) => {
            assert_eq!(p.len(), 32, "an SSLRequest is 32 bytes");
            return;
        }
        Err(_) => return,
    };
    let again = parse_client_hello(&r.encode());
    assert_eq!(
        again.as_ref(),
        Ok(&ClientHello::Response(r.clone())),
        "{r:?}"
    );
    assert_eq!(
        parse_client_hello(&r.ssl_request()),
        Ok(ClientHello::SslRequest)
    );
    // As the proxy sends it upstream.
    let mut up = r.clone();
    up.capabilities = (r.capabilities | cap::SSL) & !(cap::COMPRESS | cap::ZSTD_COMPRESSION);
    up.user = b"app_user".to_vec();
    let again = parse_client_hello(&up.encode());
    assert_eq!(
        again.as_ref(),
        Ok(&ClientHello::Response(up.clone())),
        "{up:?}"
    );
}

fn auth_reply(p: &[u8]) {
    match parse_auth_reply(p) {
        Ok(AuthReply::Err(e)) => {
            assert_eq!(p[0], 0xff);
            assert_eq!(e.code, u16::from_le_bytes([p[1], p[2]]));
            let state = match p.get(3..9) {
                Some([b'#', s @ ..]) => String::from_utf8_lossy(s).into_owned(),
                _ => "HY000".to_owned(),
            };
            assert_eq!(e.sqlstate, state, "{e:?}");
            assert_eq!(parse_err(p).as_ref(), Ok(&e));
        }
        Ok(AuthReply::Switch { plugin, data }) => {
            assert_eq!(p[0], 0xfe);
            if p.len() == 1 {
                assert_eq!(
                    (&plugin[..], &data[..]),
                    (&b"mysql_old_password"[..], &[][..])
                );
            } else {
                assert!(!plugin.contains(&0), "{plugin:?}");
                assert_eq!(plugin.len() + 1 + data.len(), p.len() - 1);
            }
        }
        Ok(AuthReply::More(more)) => assert_eq!((p[0], &p[1..]), (0x01, &more[..])),
        Ok(AuthReply::Ok) => assert_eq!(p[0], 0),
        Err(_) => assert!(!matches!(p.first(), Some(0x00 | 0x01))),
    }
}

/// The proxy's own ERR packet, with a message from the input.
fn written_err(data: &[u8]) {
    let message = String::from_utf8_lossy(data);
    let e = err_payload(1045, "28000", &message);
    let got = parse_err(&e).expect("an ERR packet the proxy writes reads back");
    assert_eq!(
        (got.code, &*got.sqlstate, &*got.message),
        (1045, "28000", &*message)
    );
}
