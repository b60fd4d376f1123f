//! Fuzz target of the binding command parser (harness: the `agentvm-fuzz` crate): no input
//! panics, a refusal is `InvalidInput`, the fast and the careful path read the same command,
//! and a parsed command serializes back to text that parses to the same command.

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
        // Where both paths parse a text, they read the same command. The fast path may accept
        // what the careful one refuses: it skips the envelope's `requestId` without reading it,
        // so a lone surrogate escape there (`"r\ud800"`, invalid in a Rust string) passes it
        // (corpus: lone_surrogate_in_request_id.json); the command itself is the same.
        if let (Some(fast), Ok(careful)) = (parse_direct(&text), parse_checked(&text)) {
            assert_eq!(fast, careful, "{text}");
        }
    });
    assert!(
        parsed >= 5,
        "only {parsed} inputs parsed: the roundtrip was barely tested"
    );
}
