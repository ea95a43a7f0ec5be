//! Reads the KTAP report that Linux's KUnit prints at boot (Documentation/dev-tools/ktap.rst)
//! out of the library kernel's log, so that a test can list every suite and case and judge
//! them.
//!
//! The kernel log comes as `syslog(READ_ALL)` gives it: each line may start with a
//! `<level>` and a `[ seconds]` stamp, which are stripped. KUnit nests by indentation, four
//! spaces a level:
//!
//! ```text
//! KTAP version 1
//! 1..2
//!     KTAP version 1
//!     # Subtest: checksum            <- a suite starts (level 1)
//!     1..5
//!     ok 1 test_csum_fixed_random_inputs
//!         # Subtest: test_csum_ipv6  <- a parameterised case: its results at level 2
//!         ok 1 case one
//!     ok 2 test_csum_ipv6             <- the case's own result (level 1)
//!     ok 3 test_x # SKIP reason       <- a skipped case
//! ok 1 checksum                       <- the suite's result (level 0)
//! ```
//!
//! Level-1 results are the cases; level-0 results close suites; deeper lines only matter
//! as context when a case fails, and are kept as its detail.

use thiserror::Error;

/// How one case or suite ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    /// Skipped, with KUnit's reason (may be empty).
    Skip(String),
}

/// One test case of a suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub name: String,
    pub outcome: Outcome,
    /// The diagnostic lines printed for this case (`# ...` and nested results), kept for
    /// failure reports.
    pub detail: Vec<String>,
}

/// One suite and its cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suite {
    pub name: String,
    pub cases: Vec<Case>,
    /// The suite's own result line; `None` when the log ended inside the suite (the
    /// kernel stopped or the log buffer was too small).
    pub outcome: Option<Outcome>,
}

/// A KTAP report the parser could not follow.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KtapError {
    #[error("no KTAP report in the kernel log (is CONFIG_KUNIT on in this kernel?)")]
    NoReport,
    #[error("line {line}: a case result outside any suite: {text:?}")]
    CaseOutsideSuite { line: usize, text: String },
}

/// Strips what `syslog(READ_ALL)` puts in front of a message: `<6>` and `[    0.123456] `.
fn message(line: &str) -> &str {
    let mut rest = line;
    if let Some(r) = rest.strip_prefix('<')
        && let Some(end) = r.find('>')
        && r[..end].bytes().all(|b| b.is_ascii_digit())
    {
        rest = &r[end + 1..];
    }
    if let Some(r) = rest.strip_prefix('[')
        && let Some(end) = r.find(']')
        && r[..end]
            .trim()
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.')
    {
        rest = &r[end + 1..];
        rest = rest.strip_prefix(' ').unwrap_or(rest);
    }
    rest
}

/// A result line's name and outcome: `ok 3 name # SKIP reason` / `not ok 2 name`.
fn result(text: &str) -> Option<(String, Outcome)> {
    let (ok, rest) = if let Some(r) = text.strip_prefix("ok ") {
        (true, r)
    } else if let Some(r) = text.strip_prefix("not ok ") {
        (false, r)
    } else {
        return None;
    };
    let (number, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (name, directive) = match rest.split_once(" # ") {
        Some((n, d)) => (n, Some(d)),
        None => (rest, None),
    };
    let outcome = match directive {
        Some(d) if d.starts_with("SKIP") => Outcome::Skip(d["SKIP".len()..].trim().to_string()),
        _ if ok => Outcome::Pass,
        _ => Outcome::Fail,
    };
    Some((name.trim().to_string(), outcome))
}

/// Parses every suite of the KTAP report in `log`.
pub fn parse(log: &str) -> Result<Vec<Suite>, KtapError> {
    let mut suites: Vec<Suite> = Vec::new();
    let mut open: Option<Suite> = None;
    let mut detail: Vec<String> = Vec::new();
    let mut seen_report = false;
    for (n, raw) in log.lines().enumerate() {
        let msg = message(raw);
        let trimmed = msg.trim_start_matches(' ');
        let level = (msg.len() - trimmed.len()) / 4;
        let text = trimmed.trim_end();
        if text.starts_with("KTAP version") {
            seen_report = true;
            continue;
        }
        if !seen_report {
            continue;
        }
        match level {
            0 => {
                if let Some((name, outcome)) = result(text)
                    && let Some(mut suite) = open.take()
                {
                    if suite.name.is_empty() {
                        suite.name = name;
                    }
                    suite.outcome = Some(outcome);
                    suites.push(suite);
                    detail.clear();
                }
            }
            1 => {
                if let Some(name) = text.strip_prefix("# Subtest: ") {
                    if let Some(unfinished) = open.take() {
                        suites.push(unfinished);
                    }
                    open = Some(Suite {
                        name: name.trim().to_string(),
                        cases: Vec::new(),
                        outcome: None,
                    });
                    detail.clear();
                } else if let Some((name, outcome)) = result(text) {
                    let Some(suite) = open.as_mut() else {
                        return Err(KtapError::CaseOutsideSuite {
                            line: n + 1,
                            text: text.to_string(),
                        });
                    };
                    suite.cases.push(Case {
                        name,
                        outcome,
                        detail: std::mem::take(&mut detail),
                    });
                } else if text.starts_with('#') && open.is_some() {
                    detail.push(text.to_string());
                }
            }
            _ => {
                if open.is_some() && !text.is_empty() {
                    detail.push(text.to_string());
                }
            }
        }
    }
    if let Some(unfinished) = open.take() {
        suites.push(unfinished);
    }
    if !seen_report {
        return Err(KtapError::NoReport);
    }
    Ok(suites)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "<6>[    0.100000] Linux version 6.12\n\
<6>[    0.200000] KTAP version 1\n\
<6>[    0.200001] 1..2\n\
<6>[    0.200002]     KTAP version 1\n\
<6>[    0.200003]     # Subtest: checksum\n\
<6>[    0.200004]     # module: checksum_kunit\n\
<6>[    0.200005]     1..3\n\
<6>[    0.200006]     ok 1 test_csum_fixed_random_inputs\n\
<6>[    0.200007]         KTAP version 1\n\
<6>[    0.200008]         # Subtest: test_csum_ipv6\n\
<6>[    0.200009]         ok 1 one\n\
<6>[    0.200010]         not ok 2 two\n\
<6>[    0.200011]     not ok 2 test_csum_ipv6\n\
<6>[    0.200012]     ok 3 test_needs_mmu # SKIP no MMU\n\
<6>[    0.200013] # checksum: pass:1 fail:1 skip:1 total:3\n\
<6>[    0.200014] not ok 1 checksum\n\
<6>[    0.300000]     KTAP version 1\n\
<6>[    0.300001]     # Subtest: string\n\
<6>[    0.300002]     1..1\n\
<6>[    0.300003]     ok 1 test_memset16\n";

    #[test]
    fn suites_cases_skips_and_unfinished_suites() {
        let suites = parse(LOG).unwrap();
        assert_eq!(suites.len(), 2);
        let cs = &suites[0];
        assert_eq!(cs.name, "checksum");
        assert_eq!(cs.outcome, Some(Outcome::Fail));
        let names: Vec<_> = cs.cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "test_csum_fixed_random_inputs",
                "test_csum_ipv6",
                "test_needs_mmu"
            ]
        );
        assert_eq!(cs.cases[0].outcome, Outcome::Pass);
        assert_eq!(cs.cases[1].outcome, Outcome::Fail);
        assert!(
            cs.cases[1].detail.iter().any(|d| d == "not ok 2 two"),
            "{:?}",
            cs.cases[1].detail
        );
        assert_eq!(cs.cases[2].outcome, Outcome::Skip("no MMU".into()));
        // The log ended inside `string`: it is reported, without an outcome.
        assert_eq!(suites[1].name, "string");
        assert_eq!(suites[1].outcome, None);
        assert_eq!(suites[1].cases.len(), 1);
    }

    #[test]
    fn a_log_without_ktap_is_an_error() {
        assert_eq!(parse("<6>[ 0.1] hello\n"), Err(KtapError::NoReport));
    }

    #[test]
    fn plain_lines_without_stamps_parse_too() {
        let suites = parse("KTAP version 1\n    # Subtest: s\n    ok 1 c\nok 1 s\n").unwrap();
        assert_eq!(suites[0].cases[0].outcome, Outcome::Pass);
        assert_eq!(suites[0].outcome, Some(Outcome::Pass));
    }

    #[test]
    fn a_case_outside_a_suite_is_an_error() {
        let e = parse("KTAP version 1\n    ok 1 lonely\n").unwrap_err();
        assert!(
            matches!(e, KtapError::CaseOutsideSuite { line: 2, .. }),
            "{e}"
        );
    }
}
