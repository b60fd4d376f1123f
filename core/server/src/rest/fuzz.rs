//! Fuzz target of REST bodies (harness: the `agentvm-fuzz` crate): every route's body, as it
//! becomes a command, never panics, and a refusal is `InvalidInput` (a 400).

use super::routes::ROUTES;
use super::{command_data, CommandKind, Value};
use crate::error::ErrorKind;
use axum::body::Bytes;
use std::collections::HashMap;

#[test]
fn fuzz_rest_bodies() {
    let query: HashMap<String, String> = HashMap::new();
    let mut accepted = 0;
    let mut i = 0;
    agentvm_fuzz::run("rest_body", |input| {
        // Each input goes to one route, in turn.
        let route = &ROUTES[i % ROUTES.len()];
        i += 1;
        let data = match command_data(route, Some("id_1"), &query, Bytes::copy_from_slice(input)) {
            Ok(data) => data,
            Err(e) => {
                assert_eq!(
                    e.0.kind(),
                    ErrorKind::InvalidInput,
                    "{} {}: {:?}",
                    route.method,
                    route.path,
                    e.0
                );
                return;
            }
        };
        let type_name = route.command.type_for(&data);
        let kind = CommandKind::from_type_name(type_name).expect("every route runs a command");
        match kind.parse_strict(Value::Object(data)) {
            Ok(_) => accepted += 1,
            Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidInput, "{type_name}: {e:?}"),
        }
    });
    assert!(
        accepted > 0,
        "no body made a command: the corpus reaches nothing"
    );
}
