//! Kubernetes' `$(VAR)` expansion of env values, and its escape.
//!
//! The kubelet expands `$(NAME)` in a container's env values (and command and
//! args) with the variables defined before it; `$$` stands for a literal `$`;
//! a reference to an unknown name stays as written. So every value the webhook
//! writes is escaped ([`escape`]), and a value it copies from the app into the
//! agent is first expanded the way the app sees it ([`expand`]).
//!
//! References nest: each variable that refers 20 times to the one before
//! multiplies the size by 20, so a few KB of env can expand to gigabytes.
//! So expansion draws on a
//! [`Budget`] of substituted bytes shared by the whole review, and a value
//! that would overrun it is not expanded at all.

use std::collections::BTreeMap;

/// The bytes [`expand`] may substitute for `$(VAR)` references over one
/// review. Real env values are short; this is far above any real pod.
pub const REVIEW_BUDGET: usize = 1 << 20;

/// What is left of a review's substitution budget.
#[derive(Debug)]
pub struct Budget {
    left: usize,
    overrun: bool,
}

impl Budget {
    pub fn new(bytes: usize) -> Self {
        Self {
            left: bytes,
            overrun: false,
        }
    }

    /// Whether an expansion has overrun the budget (which is then spent).
    pub fn overrun(&self) -> bool {
        self.overrun
    }

    /// Takes `n` bytes, or spends the rest and fails: after one overrun no
    /// further substitution happens, so the work done stays within the
    /// budget however the failed values are retried.
    fn take(&mut self, n: usize) -> Result<(), OverBudget> {
        match self.left.checked_sub(n) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => {
                self.left = 0;
                self.overrun = true;
                Err(OverBudget)
            }
        }
    }
}

/// A value whose expansion would overrun the review's [`Budget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("$(VAR) references expand past {REVIEW_BUDGET} bytes in this pod")]
pub struct OverBudget;

/// The most unresolved names [`Expanded`] keeps (for a warning).
pub const UNRESOLVED_SHOWN: usize = 8;

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
    /// Each name once, and at most [`UNRESOLVED_SHOWN`] of them.
    pub unresolved: Vec<String>,
}

/// Expands `input` as the kubelet does, with `known` holding the values of
/// the variables defined before it. Every substituted byte is taken from
/// `budget`; the work is linear in `input` plus what is substituted.
pub fn expand(
    input: &str,
    known: &BTreeMap<String, String>,
    budget: &mut Budget,
) -> Result<Expanded, OverBudget> {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut unresolved = Vec::new();
    let mut checkpoint = 0;
    let mut cursor = 0;
    // Once no `)` follows, none will: later `$(` need not look again, which
    // would make a value of many `$(` quadratic.
    let mut closed = true;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match closed.then(|| rest.find(')')).flatten() {
                    Some(close) => {
                        let name = &rest[1..close];
                        match known.get(name) {
                            Some(v) => {
                                budget.take(v.len())?;
                                out.push_str(v);
                            }
                            None => {
                                out.push_str(&format!("$({name})"));
                                if unresolved.len() < UNRESOLVED_SHOWN
                                    && !unresolved.iter().any(|u| u == name)
                                {
                                    unresolved.push(name.to_owned());
                                }
                            }
                        }
                        close + 1
                    }
                    None => {
                        closed = false;
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
    Ok(Expanded {
        value: out,
        unresolved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(input: &str, known: &BTreeMap<String, String>) -> Expanded {
        super::expand(input, known, &mut Budget::new(REVIEW_BUDGET)).unwrap()
    }

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
            ("$($(ROLE)", "$($(ROLE)"),
            ("$(x $$ $(ROLE", "$(x $ $(ROLE"),
            ("é$é", "é$é"),
            ("plain", "plain"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &known()).value, *want, "{input:?}");
        }
        assert_eq!(expand("$(NOPE)", &known()).unresolved, ["NOPE"]);
        assert_eq!(expand("$()", &known()).unresolved, [""]);
        let many: String = (0..20).map(|i| format!("$(N{}) ", i % 10)).collect();
        assert_eq!(
            expand(&many, &known()).unresolved,
            ["N0", "N1", "N2", "N3", "N4", "N5", "N6", "N7"],
            "each name once, at most 8"
        );
    }

    #[test]
    fn escaped_values_expand_to_themselves() {
        for v in ["$(AWS_ROLE_ARN)", "a$$b", "$", "$(", "x$y"] {
            assert_eq!(expand(&escape(v), &known()).value, v, "{v:?}");
        }
    }

    #[test]
    fn an_overrun_spends_the_budget() {
        let known = known();
        let role = known["ROLE"].len();
        let mut budget = Budget::new(3 * role);
        let twice = super::expand("$(ROLE)$(ROLE)", &known, &mut budget).unwrap();
        assert_eq!(twice.value.len(), 2 * role);
        assert!(!budget.overrun());
        assert_eq!(
            super::expand("$(ROLE)$(ROLE)", &known, &mut budget),
            Err(OverBudget),
            "the second value needs {} more bytes than are left",
            role
        );
        assert!(budget.overrun());
        assert_eq!(
            super::expand("$(ROLE)", &known, &mut budget),
            Err(OverBudget),
            "an overrun spends what was left"
        );
        let free = super::expand("a $$ $(NOPE) $(EMPTY)", &known, &mut budget).unwrap();
        assert_eq!(
            free.value, "a $ $(NOPE) ",
            "nothing substituted, nothing taken"
        );
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
