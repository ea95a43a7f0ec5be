//! Boots the `kunit` build of the library kernel (KNIC_KERNEL_VARIANT=kunit; see
//! lkl-netstack/lkl-sys/kernel/variants/kunit.config): Linux runs its own unit tests for
//! what the architecture port provides or the network stack leans on, at boot, and this
//! test reads the KTAP report from the kernel log and judges every suite and case.
//!
//! Run it as the suite does (deploy/dev/test.sh):
//! `KNIC_KERNEL_VARIANT=kunit cargo test -p knic-kunit --target-dir target/kunit`.

use std::collections::BTreeSet;
use std::time::Duration;

use knic_kunit::{Outcome, Suite, parse};
use lkl_netstack::{BootConfig, Kernel};

/// Suites that must have run (issue 14's list, as KUnit names them).
const REQUIRED_SUITES: &[&str] = &[
    "checksum",
    "memcpy",
    "string",
    "usercopy",
    "overflow",
    "bitfields",
    "siphash",
    "slub_test",
    "stackinit",
    "net_core",
    "dev-addr-list-test",
    "mptcp-crypto",
    "mptcp-token",
];

/// Cases that cannot apply to a library kernel, with the reason. Anything else that is
/// skipped fails the test.
const NOT_APPLICABLE: &[(&str, &str, &str)] = &[
    (
        "slub_test",
        "test_kfree_rcu",
        "runs only when slub_kunit is a loadable module; the library kernel has no module loader (everything is built in)",
    ),
    (
        "stackinit",
        "test_switch_1_none",
        "an expected failure upstream (XFAIL): no compiler initialises variables declared inside a switch",
    ),
    (
        "stackinit",
        "test_switch_2_none",
        "an expected failure upstream (XFAIL): no compiler initialises variables declared inside a switch",
    ),
    (
        "usercopy",
        "usercopy_test_valid",
        "maps user pages with vm_mmap, which needs an MMU; on nommu, user copies are memcpy (exercised by every syscall test)",
    ),
    (
        "usercopy",
        "usercopy_test_invalid",
        "maps user pages with vm_mmap, which needs an MMU; on nommu, user copies are memcpy (exercised by every syscall test)",
    ),
    (
        "usercopy",
        "usercopy_test_check_nonzero_user",
        "maps user pages with vm_mmap, which needs an MMU; on nommu, user copies are memcpy (exercised by every syscall test)",
    ),
    (
        "usercopy",
        "usercopy_test_copy_struct_from_user",
        "maps user pages with vm_mmap, which needs an MMU; on nommu, user copies are memcpy (exercised by every syscall test)",
    ),
];

/// Suites Linux has that the library kernel cannot build, and why (for the report).
const NOT_BUILT: &[(&str, &str)] = &[
    (
        "iov_iter (CONFIG_TEST_IOV_ITER)",
        "depends on MMU: it maps user pages, which a nommu kernel has none of",
    ),
    (
        "handshake (CONFIG_NET_HANDSHAKE_KUNIT_TEST)",
        "NET_HANDSHAKE is only built for SUNRPC or NVMe over TCP, neither of which is in a network-only library kernel",
    ),
];

fn report(suites: &[Suite]) -> String {
    let mut out = String::new();
    for s in suites {
        let verdict = match &s.outcome {
            Some(Outcome::Pass) => "ok".to_string(),
            Some(Outcome::Fail) => "FAILED".to_string(),
            Some(Outcome::Skip(r)) => format!("skipped ({r})"),
            None => "UNFINISHED".to_string(),
        };
        out.push_str(&format!(
            "suite {} [{} cases]: {verdict}\n",
            s.name,
            s.cases.len()
        ));
        for c in &s.cases {
            let v = match &c.outcome {
                Outcome::Pass => "ok".to_string(),
                Outcome::Fail => format!("FAILED\n        {}", c.detail.join("\n        ")),
                Outcome::Skip(r) => match NOT_APPLICABLE
                    .iter()
                    .find(|(suite, case, _)| *suite == s.name && *case == c.name)
                {
                    Some((_, _, why)) => format!("not applicable ({r}): {why}"),
                    None => format!("SKIPPED ({r})"),
                },
            };
            out.push_str(&format!("    {}: {v}\n", c.name));
        }
    }
    for (what, why) in NOT_BUILT {
        out.push_str(&format!("not built: {what}: {why}\n"));
    }
    out
}

#[test]
fn linux_unit_tests_pass_inside_the_library_kernel() {
    assert_eq!(
        lkl_sys::KERNEL_VARIANT,
        "kunit",
        "this test needs the kunit build of the library kernel: run it as \
         KNIC_KERNEL_VARIANT=kunit cargo test -p knic-kunit --target-dir target/kunit"
    );
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,linux=warn")
        .try_init();
    // A test that wedges the kernel would hang the boot: give up loudly instead.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(600));
        eprintln!("the kunit kernel did not finish booting within 600 s");
        std::process::abort();
    });
    let kernel = Kernel::boot(&BootConfig::default()).expect("boot the kunit kernel");
    let log = kernel.kernel_log().expect("read the kernel log");
    let suites = parse(&log).unwrap_or_else(|e| panic!("{e}\n{log}"));
    let text = report(&suites);
    eprintln!("{text}");

    let ran: BTreeSet<&str> = suites.iter().map(|s| s.name.as_str()).collect();
    let missing: Vec<&&str> = REQUIRED_SUITES
        .iter()
        .filter(|s| !ran.contains(**s))
        .collect();
    assert!(
        missing.is_empty(),
        "suites that did not run: {missing:?}\n{text}"
    );

    let mut bad = Vec::new();
    for s in &suites {
        if s.outcome.is_none() {
            bad.push(format!("{}: the log ends inside the suite", s.name));
        }
        for c in &s.cases {
            match &c.outcome {
                Outcome::Pass => {}
                Outcome::Fail => bad.push(format!("{}.{}: failed", s.name, c.name)),
                Outcome::Skip(reason) => {
                    if !NOT_APPLICABLE
                        .iter()
                        .any(|(suite, case, _)| *suite == s.name && *case == c.name)
                    {
                        bad.push(format!("{}.{}: skipped ({reason})", s.name, c.name));
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "{} problems: {bad:#?}", bad.len());
    let cases: usize = suites.iter().map(|s| s.cases.len()).sum();
    let passed = suites
        .iter()
        .flat_map(|s| &s.cases)
        .filter(|c| c.outcome == Outcome::Pass)
        .count();
    eprintln!(
        "{} suites, {cases} cases: {passed} passed, {} not applicable (listed above)",
        suites.len(),
        cases - passed
    );

    // The boot-time self-tests outside KUnit.
    assert!(
        log.contains("atomic64_test: passed"),
        "lib/atomic64_test.c did not report success:\n{log}"
    );
    let crypto = kernel.read_file("/proc/crypto").expect("/proc/crypto");
    for block in crypto.split("\n\n").filter(|b| !b.trim().is_empty()) {
        assert!(
            block.contains("selftest     : passed"),
            "a crypto algorithm did not pass the crypto manager's self-test:\n{block}"
        );
    }
    let crypto_failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("alg: ") && (l.contains("fail") || l.contains("overran")))
        .collect();
    assert!(
        crypto_failures.is_empty(),
        "the crypto manager reported failures: {crypto_failures:#?}"
    );
    kernel.halt().expect("halt");
}
