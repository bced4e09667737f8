//! Kubernetes' `$(VAR)` expansion of env values, and its escape.
//!
//! The kubelet expands `$(NAME)` in a container's env values (and command and
//! args) with the variables defined before it; `$$` stands for a literal `$`;
//! a reference to an unknown name stays as written. So every value the webhook
//! writes is escaped ([`escape`]), and a value it copies from the app into the
//! agent is first expanded the way the app sees it ([`expand`]).

use std::collections::BTreeMap;

/// Escapes every `$`, so the kubelet passes `value` through unchanged.
pub fn escape(value: &str) -> String {
    value.replace('$', "$$")
}

/// What [`expand`] gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    pub value: String,
    /// Names referenced but not known (defined by `valueFrom`, `envFrom`, or
    /// not at all): they stay as `$(NAME)`, which the app may see otherwise.
    pub unresolved: Vec<String>,
}

/// Expands `input` as the kubelet does, with `known` holding the values of
/// the variables defined before it.
pub fn expand(input: &str, known: &BTreeMap<String, String>) -> Expanded {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut unresolved = Vec::new();
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(close) => {
                        let name = &rest[1..close];
                        match known.get(name) {
                            Some(v) => out.push_str(v),
                            None => {
                                out.push_str(&format!("$({name})"));
                                unresolved.push(name.to_owned());
                            }
                        }
                        close + 1
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // `$` and the next character, as they are.
                    let ch = rest.chars().next().map_or(1, char::len_utf8);
                    out.push('$');
                    out.push_str(&rest[..ch]);
                    ch
                }
            };
            cursor += 1 + advance;
            checkpoint = cursor;
        } else {
            cursor += 1;
        }
    }
    out.push_str(&input[checkpoint..]);
    Expanded {
        value: out,
        unresolved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> BTreeMap<String, String> {
        [("ROLE", "arn:aws:iam::1:role/app"), ("EMPTY", "")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// Cases from the kubelet's own expansion tests
    /// (third_party/forked/golang/expansion), written out here.
    #[test]
    fn expands_like_the_kubelet() {
        let cases: &[(&str, &str)] = &[
            ("$(ROLE)", "arn:aws:iam::1:role/app"),
            ("x-$(ROLE)-y", "x-arn:aws:iam::1:role/app-y"),
            ("$(EMPTY)z", "z"),
            ("$$(ROLE)", "$(ROLE)"),
            ("$$$(ROLE)", "$arn:aws:iam::1:role/app"),
            ("$$", "$"),
            ("a$", "a$"),
            ("$a", "$a"),
            ("$(ROLE", "$(ROLE"),
            ("$()", "$()"),
            ("$(NOPE)", "$(NOPE)"),
            ("é$é", "é$é"),
            ("plain", "plain"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &known()).value, *want, "{input:?}");
        }
        assert_eq!(expand("$(NOPE)", &known()).unresolved, ["NOPE"]);
        assert_eq!(expand("$()", &known()).unresolved, [""]);
    }

    #[test]
    fn escaped_values_expand_to_themselves() {
        for v in ["$(AWS_ROLE_ARN)", "a$$b", "$", "$(", "x$y"] {
            assert_eq!(expand(&escape(v), &known()).value, v, "{v:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn escape_round_trips(v in "[$()a-zA-Z_é]{0,20}") {
            let e = expand(&escape(&v), &known());
            proptest::prop_assert_eq!(e.value, v);
            proptest::prop_assert!(e.unresolved.is_empty());
        }
    }
}
