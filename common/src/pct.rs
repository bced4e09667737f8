//! Percent-encoding as RFC 3986 and SigV4 define it: every byte except the
//! unreserved `A-Z a-z 0-9 - _ . ~` becomes `%XX` (upper-case hex).

/// Encodes `value`.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if is_unreserved(b) {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
    out
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// Why [`decode`] refused a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("'%' at byte {0} is not followed by two hex digits")]
    BadEscape(usize),
    #[error("byte {0} must be percent-encoded")]
    Unencoded(usize),
    #[error("the decoded bytes are not UTF-8")]
    NotUtf8,
}

/// Decodes a value written by [`encode`]. Strict: anything but unreserved
/// characters and `%XX` escapes is refused, so each value has one spelling.
pub fn decode(value: &str) -> Result<String, DecodeError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = |j: usize| bytes.get(j).and_then(|c| (*c as char).to_digit(16));
            match (hex(i + 1), hex(i + 2)) {
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                _ => return Err(DecodeError::BadEscape(i)),
            }
            i += 3;
        } else if is_unreserved(b) {
            out.push(b);
            i += 1;
        } else {
            return Err(DecodeError::Unencoded(i));
        }
    }
    String::from_utf8(out).map_err(|_| DecodeError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings() {
        assert_eq!(encode("aZ09-_.~"), "aZ09-_.~");
        assert_eq!(encode("a b/c+d=e@f%"), "a%20b%2Fc%2Bd%3De%40f%25");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(encode("$(X)"), "%24%28X%29");
    }

    #[test]
    fn decode_is_strict() {
        assert_eq!(decode("a%20b").unwrap(), "a b");
        assert_eq!(decode("%c3%a9").unwrap(), "é");
        assert_eq!(decode("a b"), Err(DecodeError::Unencoded(1)));
        assert_eq!(decode("a%2"), Err(DecodeError::BadEscape(1)));
        assert_eq!(decode("%zz"), Err(DecodeError::BadEscape(0)));
        assert_eq!(decode("%ff"), Err(DecodeError::NotUtf8));
    }

    proptest::proptest! {
        #[test]
        fn round_trip(s in "\\PC{0,40}") {
            let e = encode(&s);
            proptest::prop_assert!(e.bytes().all(|b| is_unreserved(b) || b == b'%'));
            proptest::prop_assert_eq!(decode(&e).unwrap(), s);
        }
    }
}
