//! Builds `flow.c` with `cc` against the cdylib and runs it, then again under valgrind
//! (`--leak-check=full`, nothing definitely lost, no memory errors). valgrind is required when
//! `AGENTVM_REQUIRE_VALGRIND=1` (scripts/test-all.sh installs it), else skipped when missing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/<profile>/deps`, beside this test binary: where `cargo test` builds the
/// `libagentvm.so` of this very source (it copies it up to `target/<profile>` only on
/// `cargo build`, so that copy may be stale).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent().expect("target/<profile>/deps").to_path_buf()
}

fn build_flow() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib_dir = lib_dir();
    assert!(
        lib_dir.join("libagentvm.so").exists(),
        "libagentvm.so is not in {}: build the crate first",
        lib_dir.display()
    );
    let out = lib_dir.join("agentvm-c-flow");
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args([
            "-Wall",
            "-Wextra",
            "-Werror",
            "-std=c11",
            "-D_DEFAULT_SOURCE",
            "-g",
        ])
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg(crate_dir.join("tests/flow.c"))
        .arg("-L")
        .arg(&lib_dir)
        .arg("-lagentvm")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-o")
        .arg(&out)
        .status()
        .expect("running cc");
    assert!(status.success(), "cc failed to build flow.c");
    out
}

fn run(mut cmd: Command) {
    let output = cmd.output().expect("running the C flow");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the C flow failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(stdout.contains("ok: C flow passed"), "{stdout}");
}

#[test]
fn the_c_flow_passes_and_is_clean_under_valgrind() {
    let flow = build_flow();
    run(Command::new(&flow));

    let have_valgrind = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_valgrind {
        assert!(
            std::env::var("AGENTVM_REQUIRE_VALGRIND").as_deref() != Ok("1"),
            "valgrind is required (AGENTVM_REQUIRE_VALGRIND=1) but not installed"
        );
        eprintln!("skipped the valgrind run: valgrind is not installed");
        return;
    }
    let mut cmd = Command::new("valgrind");
    // The process runtime's threads live until exit: their memory is "still reachable" or
    // "possibly lost" (thread stacks), never "definitely lost".
    cmd.args([
        "--leak-check=full",
        "--errors-for-leak-kinds=definite",
        "--error-exitcode=1",
        "--quiet",
    ])
    .arg(&flow);
    run(cmd);
}
