//! The libpq password file format.
//!
//! A line is `hostname:port:database:username:password`. libpq reads a
//! backslash as "take the next character literally", so `\` is written as `\\`
//! and `:` as `\:`. Backslashes are escaped first, so that the backslash added
//! before a `:` is not itself doubled. libpq also reads a field that is
//! exactly `*` as "any value" and a line that starts with `#` as a comment,
//! so such a field gets a backslash in front, which makes it literal.

/// Errors building a passfile line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgpassError {
    /// A newline or carriage return would start a second entry.
    #[error("the {field} contains a line break, which would add a line to pgpass")]
    LineBreak { field: &'static str },
    /// libpq reads a line as a C string: a NUL ends it early.
    #[error("the {field} contains a NUL byte, which would cut its pgpass line short")]
    Nul { field: &'static str },
}

/// Escapes one field for a passfile.
pub fn escape_field(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    if value == "*" || value.starts_with('#') {
        out.push('\\');
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ':' => out.push_str("\\:"),
            c => out.push(c),
        }
    }
    out
}

/// Builds the one-line passfile `host:port:*:user:token\n`.
///
/// Refuses any field with a line break or a NUL: a line holds exactly one
/// entry.
pub fn line(host: &str, port: u16, user: &str, token: &str) -> Result<String, PgpassError> {
    for (field, value) in [("host", host), ("user", user), ("token", token)] {
        if value.contains(['\n', '\r']) {
            return Err(PgpassError::LineBreak { field });
        }
        if value.contains('\0') {
            return Err(PgpassError::Nul { field });
        }
    }
    Ok(format!(
        "{}:{}:*:{}:{}\n",
        escape_field(host),
        port,
        escape_field(user),
        escape_field(token)
    ))
}

/// Splits one passfile line into its fields the way libpq does
/// (`passwordFromFile` in `fe-connect.c`): a backslash takes the next
/// character literally (a trailing backslash stays), and an unescaped `:`
/// ends a field, including the password, so anything after a fifth `:` is
/// ignored. Returns `None` for comments and lines with fewer than five
/// fields, which libpq skips.
pub fn parse_line(line: &str) -> Option<[String; 5]> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.starts_with('#') {
        return None;
    }
    let mut fields: Vec<String> = Vec::with_capacity(5);
    let mut cur = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => cur.push(n),
                None => cur.push('\\'),
            },
            ':' => {
                fields.push(std::mem::take(&mut cur));
                if fields.len() == 5 {
                    return fields.try_into().ok();
                }
            }
            c => cur.push(c),
        }
    }
    fields.push(cur);
    fields.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_backslash_before_colon() {
        assert_eq!(escape_field(r"a:b\c"), r"a\:b\\c");
        assert_eq!(escape_field(r"\:"), r"\\\:");
        assert_eq!(escape_field("plain"), "plain");
    }

    #[test]
    fn line_has_five_fields_and_any_database() {
        let token = "db.example.com:5432/?Action=connect&DBUser=app&X-Amz-Signature=abc";
        let l = line("db.example.com", 5432, "app", token).unwrap();
        assert_eq!(
            l,
            "db.example.com:5432:*:app:db.example.com\\:5432/?Action=connect&DBUser=app&X-Amz-Signature=abc\n"
        );
        let f = parse_line(&l).unwrap();
        assert_eq!(
            f,
            ["db.example.com", "5432", "*", "app", token].map(String::from)
        );
    }

    #[test]
    fn refuses_line_breaks() {
        assert_eq!(
            line("h", 1, "a\nb", "t"),
            Err(PgpassError::LineBreak { field: "user" })
        );
        assert_eq!(
            line("h\r", 1, "u", "t"),
            Err(PgpassError::LineBreak { field: "host" })
        );
        assert_eq!(
            line("h", 1, "u", "t\n"),
            Err(PgpassError::LineBreak { field: "token" })
        );
    }

    /// The pgpass fuzz target's model of libpq (fuzz/src/pgpass.rs) found a
    /// line that libpq skips (a host starting with `#`); a user `*` (any
    /// user to libpq) and a NUL (which ends libpq's line) break it too.
    #[test]
    fn libpq_specials_stay_literal() {
        let l = line("#h", 5432, "*", "*").unwrap();
        assert_eq!(l, "\\#h:5432:*:\\*:\\*\n");
        assert_eq!(
            parse_line(&l),
            Some(["#h", "5432", "*", "*", "*"].map(String::from))
        );
        assert_eq!(escape_field("a#*"), "a#*");
        assert_eq!(escape_field("**"), "**");
        assert_eq!(
            line("h", 1, "u", "t\0x"),
            Err(PgpassError::Nul { field: "token" })
        );
        assert_eq!(
            line("h\0", 1, "u", "t"),
            Err(PgpassError::Nul { field: "host" })
        );
    }

    #[test]
    fn parse_follows_libpq() {
        // Hand-written lines as libpq reads them.
        assert_eq!(
            parse_line(r"h:1:*:u:pa\:ss\\word"),
            Some(["h", "1", "*", "u", r"pa:ss\word"].map(String::from))
        );
        // An unescaped ':' ends the password too.
        assert_eq!(
            parse_line("h:1:*:u:a:b"),
            Some(["h", "1", "*", "u", "a"].map(String::from))
        );
        assert_eq!(
            parse_line("h:1:*:u:ab\\"),
            Some(["h", "1", "*", "u", "ab\\"].map(String::from))
        );
        assert_eq!(parse_line("# comment:a:b:c:d"), None);
        assert_eq!(parse_line("h:1:*:u"), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        #[test]
        fn round_trip_through_libpq_rules(
            host in "[^\n\r\x00]{0,40}",
            user in "[^\n\r\x00]{0,40}",
            token in "[^\n\r\x00]{0,200}",
            port in 1u16..,
        ) {
            let l = line(&host, port, &user, &token).unwrap();
            proptest::prop_assert_eq!(l.matches('\n').count(), 1);
            let f = parse_line(&l).unwrap();
            proptest::prop_assert_eq!(&f[0], &host);
            proptest::prop_assert_eq!(&f[1], &port.to_string());
            proptest::prop_assert_eq!(&f[2], "*");
            proptest::prop_assert_eq!(&f[3], &user);
            proptest::prop_assert_eq!(&f[4], &token);
        }

        #[test]
        fn no_value_adds_a_line(user in ".{0,40}", token in ".{0,80}") {
            match line("h", 5432, &user, &token) {
                Ok(l) => proptest::prop_assert_eq!(l.lines().count(), 1),
                Err(PgpassError::LineBreak { .. }) => {
                    proptest::prop_assert!(user.contains(['\n', '\r']) || token.contains(['\n', '\r']))
                }
                Err(PgpassError::Nul { .. }) => {
                    proptest::prop_assert!(user.contains('\0') || token.contains('\0'))
                }
            }
        }
    }
}
