//! The archive links into C and Rust programs next to libc: its only global symbols
//! are the library's entry points, and a C program with its own host operations
//! boots it. (The Rust side is every other test of lkl-netstack.)

#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code

use std::path::PathBuf;
use std::process::Command;

/// Installs the library into a test directory, once per test binary (both tests
/// need it; two installs at once would race on the copy). lkl-sys's build script has
/// built it already, so this must be a cache hit: a second build of the same tarball
/// and port does not run make.
fn build_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(install).clone()
}

fn install() -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("knic-kernel");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kernel/build-kernel.sh");
    let run = Command::new(script)
        .arg(&out)
        .output()
        .expect("run build-kernel.sh");
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "build-kernel.sh failed:\n{log}");
    assert!(
        log.contains("cached build"),
        "a second build did not reuse the cache:\n{log}"
    );
    out
}

#[test]
fn archive_exports_only_entry_points() {
    let lib = build_dir().join("lib/libknic_linux.a");
    let nm = Command::new("nm")
        .args(["-g", "--defined-only"])
        .arg(&lib)
        .output()
        .expect("nm");
    assert!(nm.status.success());
    let mut globals: Vec<String> = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3).then(|| f[2].to_owned())
        })
        .collect();
    globals.sort();
    let mut expected = vec![
        "knic_get_free_irq",
        "knic_halt",
        "knic_host_jmp_buf_longjmp",
        "knic_host_jmp_buf_set",
        "knic_is_running",
        "knic_put_irq",
        "knic_start_kernel",
        "knic_syscall",
        "knic_trigger_irq",
    ];
    expected.sort();
    assert_eq!(globals, expected);
}

#[test]
fn c_program_links_next_to_libc_and_boots() {
    let dir = build_dir();
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("knic_c_program");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c_program.c");
    let cc = Command::new("cc")
        .args(["-O2", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg(format!("-I{}", dir.join("include").display()))
        .arg(dir.join("lib/libknic_linux.a"))
        .arg("-lpthread")
        .status()
        .expect("cc");
    assert!(cc.success(), "compiling/linking the C program failed");
    let run = Command::new(&exe).output().expect("run the C program");
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    assert!(
        run.status.success(),
        "C program failed: {stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("c_program: ok"));
}
