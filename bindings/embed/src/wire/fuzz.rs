//! Fuzz target of the binding command parser (harness: the `agentvm-fuzz` crate): no input
//! panics, a refusal is `InvalidInput`, the fast and the careful path agree, and a parsed
//! command serializes back to text that parses to the same command.

use super::{parse_checked, parse_command, parse_direct};
use agentvm::ErrorKind;

#[test]
fn fuzz_command_parser() {
    let mut parsed = 0;
    agentvm_fuzz::run("command", |input| {
        let text = String::from_utf8_lossy(input);
        match parse_command(&text) {
            Ok(command) => {
                parsed += 1;
                let again = serde_json::to_string(&command).expect("a command serializes");
                assert_eq!(
                    parse_command(&again).expect("a serialized command parses"),
                    command,
                    "{again}"
                );
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e:?}"),
        }
        // The fast path never accepts what the careful one refuses, nor reads it differently.
        if let Some(fast) = parse_direct(&text) {
            assert_eq!(parse_checked(&text).ok(), Some(fast), "{text}");
        }
    });
    assert!(
        parsed >= 5,
        "only {parsed} inputs parsed: the roundtrip was barely tested"
    );
}
