//! The VMM examples in `deploy/vmm/`: the QEMU one uses exactly the vhost-user options the
//! guest tests run QEMU with (so they cannot drift apart), and the libvirt domain validates
//! against libvirt's schema with `virt-xml-validate`.

// The helpers below are test code too (clippy.toml lets #[test] fns unwrap; this extends
// that to their helpers): a failed unwrap fails the test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use guest_tests::{Scratch, require_tool};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The sources of the guest tests' QEMU command lines (the builder and its callers).
fn guest_test_sources() -> String {
    let mut all = String::new();
    for dir in ["guest-tests/src", "guest-tests/tests"] {
        for e in fs::read_dir(repo().join(dir)).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.extension().is_some_and(|x| x == "rs") && !name.starts_with("deploy_") {
                all.push_str(&fs::read_to_string(&p).unwrap());
            }
        }
    }
    all
}

#[test]
fn qemu_example_matches_what_the_guest_tests_run() {
    let example = fs::read_to_string(repo().join("deploy/vmm/qemu-vhost-user.sh")).unwrap();
    let sources = guest_test_sources();
    // The command itself, not the comments (which mention the other socket role).
    let words: Vec<&str> = example
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .collect();
    let mut checked = 0;
    for pair in words.windows(2) {
        let (opt, value) = (pair[0], pair[1]);
        if !["-object", "-numa", "-chardev", "-netdev", "-device"].contains(&opt) {
            continue;
        }
        // The example's shell variables stand for the tests' values; the rest must be the
        // tests' own text (option by option).
        for part in value.split(',') {
            if part.contains('$') {
                let key = part.split('=').next().unwrap();
                assert!(
                    sources.contains(&format!(",{key}=")),
                    "{opt} {key}= is not set by the guest tests"
                );
                continue;
            }
            assert!(
                sources.contains(part),
                "{opt} ...{part}... in deploy/vmm/qemu-vhost-user.sh is not what the guest tests run"
            );
            checked += 1;
        }
    }
    for needed in [
        "memory-backend-memfd",
        "share=on",
        "reconnect-ms=1000",
        "vhost-user",
        "mq=",
    ] {
        assert!(example.contains(needed), "example lacks {needed}");
    }
    assert!(checked >= 10, "only {checked} option parts compared");
}

#[test]
fn libvirt_domain_validates() {
    let validate = require_tool("virt-xml-validate");
    require_tool("xmllint");
    let xml = repo().join("deploy/vmm/libvirt-vhostuser.xml");
    let out = Command::new(&validate)
        .arg(&xml)
        .arg("domain")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = fs::read_to_string(&xml).unwrap();
    for needed in [
        "type='vhostuser'",
        "<source type='memfd'/>",
        "<access mode='shared'/>",
        "<reconnect enabled='yes'",
    ] {
        assert!(text.contains(needed), "domain lacks {needed}");
    }
    // The validator can fail: a vhostuser interface without its source is rejected.
    let dir = Scratch::new("deploy-vmm");
    let broken = dir.0.join("broken.xml");
    fs::write(&broken, text.replace("mode='client'", "mode='sideways'")).unwrap();
    let out = Command::new(&validate)
        .arg(&broken)
        .arg("domain")
        .output()
        .unwrap();
    assert!(!out.status.success(), "an invalid domain validated");
}
