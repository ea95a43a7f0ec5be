//! The VMM examples in `deploy/vmm/`: the QEMU one's vhost-user options are exactly those of
//! the guest tests' QEMU builder (`guest_tests::qemu`, rendered here, so they cannot drift), and the libvirt domain validates
//! against libvirt's schema with `virt-xml-validate`.

// The helpers below are test code too (clippy.toml lets #[test] fns unwrap; this extends
// that to their helpers): a failed unwrap fails the test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use guest_tests::qemu::QemuGuest;
use guest_tests::{Scratch, require_tool};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The value following each of `options` in `args`, in order: ("-netdev", "vhost-user,...").
fn option_values(args: &[String], options: &[&str]) -> Vec<(String, String)> {
    args.windows(2)
        .filter(|w| options.contains(&w[0].as_str()))
        .map(|w| (w[0].clone(), w[1].clone()))
        .collect()
}

#[test]
fn qemu_example_is_what_the_guest_tests_run() {
    const OPTIONS: [&str; 5] = ["-object", "-numa", "-chardev", "-netdev", "-device"];
    let socket = Path::new("/run/knic/vm1.sock");
    // The guest tests' own builder, rendered for 2 queue pairs with reconnect.
    let cmd = QemuGuest::new(Path::new("/initrd"), socket, Path::new("/console"))
        .queues(2)
        .reconnect(true)
        .command();
    let built: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // The example's command (not its comments), its shell variables given the same values.
    let example = fs::read_to_string(repo().join("deploy/vmm/qemu-vhost-user.sh")).unwrap();
    let words: Vec<String> = example
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .map(|w| {
            w.replace("\"$SOCKET\"", &socket.display().to_string())
                .replace("\"$QUEUES\"", "2")
                .replace("\"$MQ\"", "on")
                .replace("\"$VECTORS\"", "6")
        })
        .collect();
    let from_example = option_values(&words, &OPTIONS);
    let from_builder = option_values(&built, &OPTIONS);
    assert_eq!(
        from_example, from_builder,
        "deploy/vmm/qemu-vhost-user.sh and guest-tests/src/qemu.rs differ"
    );
    assert_eq!(from_example.len(), 5, "{from_example:?}");
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
