//! `cargo run -p agentvm-schema` writes docs/schema/agentvm.schema.json,
//! python/agentvm/_protocol.py and node/protocol.d.ts from the Rust types of agentvm-model;
//! `-- --check` writes nothing and fails (exit 1) naming each committed file that differs.

use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().skip(1).any(|a| a == "--check");
    let outputs = match agentvm_schema::outputs() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("generating the protocol's schema and types: {e}");
            return ExitCode::FAILURE;
        }
    };
    let root = agentvm_schema::repository_root();
    if check {
        let drifted = agentvm_schema::drifted(root, &outputs);
        for path in &drifted {
            eprintln!("{path} is out of date: run `cargo run -p agentvm-schema` and commit it");
        }
        if !drifted.is_empty() {
            return ExitCode::FAILURE;
        }
        for o in &outputs {
            println!("{} is up to date", o.path);
        }
        return ExitCode::SUCCESS;
    }
    for o in &outputs {
        let path = root.join(o.path);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, &o.contents));
        if let Err(e) = written {
            eprintln!("writing {}: {e}", o.path);
            return ExitCode::FAILURE;
        }
        println!("wrote {}", o.path);
    }
    ExitCode::SUCCESS
}
