//! Builds the sandbox exec agent (`agent/main.rs`) for the Docker engine to copy into
//! sandboxes: compiled by `rustc` alone (it uses the standard library only), statically
//! linked so it runs in any Linux image, and embedded with `include_bytes!`. Where it cannot
//! be built (a target that is not Linux/glibc, or a toolchain without a static C library) the
//! embedded agent is empty and every exec goes through Docker's own exec, as before.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=agent/main.rs");
    println!("cargo:rerun-if-changed=agent/protocol.rs");
    println!("cargo:rerun-if-changed=build.rs");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let agent = out_dir.join("agentvm-exec-agent");
    let target = env::var("TARGET").unwrap_or_default();
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let built = target.ends_with("-linux-gnu")
        && Command::new(rustc)
            .args(["--edition", "2021", "--crate-type", "bin", "--crate-name"])
            .arg("agentvm_exec_agent")
            .args(["--target", &target])
            .args([
                "-C",
                "opt-level=s",
                "-C",
                "panic=abort",
                "-C",
                "strip=symbols",
            ])
            .args(["-C", "target-feature=+crt-static", "-C", "codegen-units=1"])
            .arg("-o")
            .arg(&agent)
            .arg("agent/main.rs")
            .status()
            .is_ok_and(|s| s.success());
    if !built {
        println!(
            "cargo:warning=the sandbox exec agent was not built for {target}: execs use Docker exec"
        );
        std::fs::write(&agent, b"").expect("writing the empty exec agent");
    }
}
