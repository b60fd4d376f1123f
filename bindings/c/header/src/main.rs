//! `cargo run -p agentvm-ffi-header` writes `bindings/c/include/agentvm.h` from the
//! `agentvm-ffi` sources; `-- --check` fails (exit 1) when the committed header differs.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let header = crate_dir.join("include/agentvm.h");
    let config = match cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("reading cbindgen.toml: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bindings = match cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
    {
        Ok(b) => b,
        Err(e) => {
            eprintln!("generating the header: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    if check {
        let committed = std::fs::read(&header).unwrap_or_default();
        if committed != fresh {
            eprintln!(
                "{} is out of date: run `cargo run -p agentvm-ffi-header` and commit it",
                header.display()
            );
            return ExitCode::FAILURE;
        }
        println!("{} is up to date", header.display());
        return ExitCode::SUCCESS;
    }
    if let Err(e) = std::fs::write(&header, &fresh) {
        eprintln!("writing {}: {e}", header.display());
        return ExitCode::FAILURE;
    }
    println!("wrote {}", header.display());
    ExitCode::SUCCESS
}
