//! The JSON in and out of [`Embed::request`](crate::Embed::request): a command parsed
//! strictly from its envelope, and a response's `data` cut out of its serialized form.
//!
//! Both sit on the hot path of every binding call, so each has a fast path that touches the
//! text once, and falls back to the slow, careful path for anything unusual (which is also the
//! one that words the errors).

use agentvm::{Command, Error, Response, Result};

/// Parses `{"type": "<name>_request", "data": {...}}` strictly: an unknown type or field is
/// `InvalidInput` naming it; `data` may carry the envelope's `requestId`.
pub(crate) fn parse_command(json: &str) -> Result<Command> {
    match parse_direct(json) {
        Some(command) => Ok(command),
        None => parse_checked(json),
    }
}

/// One pass from the text straight into the typed command. `None` for anything but a clean
/// envelope whose data has no field beyond the request's own (and `requestId`): the checked
/// path then finds and words the problem.
fn parse_direct(json: &str) -> Option<Command> {
    let mut foreign = false;
    let mut de = serde_json::Deserializer::from_str(json);
    let command: Command = serde_ignored::deserialize(&mut de, |path| {
        // Only the envelope's own request id may ride along in `data`.
        if path.to_string() != "data.requestId" {
            foreign = true;
        }
    })
    .ok()?;
    de.end().ok()?;
    (!foreign).then_some(command)
}

/// The careful path: the envelope first (so an unknown type is named as such), then the data
/// against its request type, naming every unknown field.
fn parse_checked(json: &str) -> Result<Command> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Envelope {
        #[serde(rename = "type")]
        type_name: String,
        #[serde(default)]
        data: serde_json::Value,
    }
    let envelope: Envelope = serde_json::from_str(json)
        .map_err(|e| Error::invalid(format!("Invalid request JSON: {e}")))?;
    crate::parse_command_parts(&envelope.type_name, envelope.data)
}

/// The response's `data` as JSON text, written straight into one buffer: no envelope to cut
/// away, no `Value` tree, and a buffer sized from this thread's last answer, so a typical
/// answer (an image record with its system prompt is a few KB) is written without growing it.
pub(crate) fn response_data(response: &Response) -> Result<String> {
    let mut text = Vec::with_capacity(ANSWER_SIZE.get());
    crate::serialize_response_data(response, &mut serde_json::Serializer::new(&mut text))
        .map_err(|e| Error::Internal(format!("serializing a response: {e}")))?;
    // Room for the NUL a C caller's copy appends, so handing it out does not grow it again.
    ANSWER_SIZE.set((text.len() + 1).clamp(MIN_ANSWER, MAX_ANSWER_HINT));
    // serde_json writes UTF-8 only.
    String::from_utf8(text).map_err(|e| Error::Internal(format!("serializing a response: {e}")))
}

/// The smallest buffer an answer starts with.
const MIN_ANSWER: usize = 128;
/// The largest size remembered: one huge answer (a long history) does not make every later
/// small one allocate as much.
const MAX_ANSWER_HINT: usize = 64 * 1024;

thread_local! {
    /// The size of this thread's last answer: calls on one thread tend to repeat.
    static ANSWER_SIZE: std::cell::Cell<usize> = const { std::cell::Cell::new(MIN_ANSWER) };
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use agentvm::ErrorKind;

    fn refused(json: &str) -> String {
        let e = parse_command(json).expect_err(json);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{json}: {e}");
        e.to_string()
    }

    #[test]
    fn both_paths_agree_on_good_commands() {
        for json in [
            r#"{"type":"image_get_request","data":{"imageId":"img_1"}}"#,
            r#"{"type":"image_get_request","data":{"imageId":"img_1","requestId":"r1"}}"#,
            r#"{"data":{"imageId":"img_1"},"type":"image_get_request"}"#,
            r#"{"type":"container_list_request","data":{}}"#,
            r#" {"type":"message_send_request","data":{"imageId":"i","content":"héllo \u0041"}} "#,
        ] {
            let direct = parse_direct(json);
            let checked = parse_checked(json).expect(json);
            assert_eq!(direct.as_ref(), Some(&checked), "{json}");
        }
    }

    #[test]
    fn what_the_direct_path_declines_the_checked_path_accepts_or_words() {
        // No data, or null data: the request's defaults.
        for json in [
            r#"{"type":"container_list_request"}"#,
            r#"{"type":"container_list_request","data":null}"#,
        ] {
            assert!(parse_command(json).is_ok(), "{json}");
        }
        assert!(
            refused(r#"{"type":"image_get_request","data":{"imageId":"i","bogus":1}}"#)
                .contains("unknown field `bogus`")
        );
        assert!(
            refused(r#"{"type":"image_get_request","data":{"imageId":"i"},"x":1}"#)
                .contains("Invalid request JSON")
        );
        assert!(refused(r#"{"type":"nope_request","data":{}}"#)
            .contains("Unknown request type: nope_request"));
        assert!(refused(r#"{"type":"image_get_request","data":{}}"#).contains("imageId"));
        assert!(
            refused(r#"{"type":"image_get_request","data":{"imageId":"i"}} trailing"#)
                .contains("Invalid request JSON")
        );
        assert!(refused("not json").contains("Invalid request JSON"));
    }

    #[test]
    fn response_data_is_the_data_alone() {
        let response = Response::ContainerList(agentvm::ContainerListResponse {
            container_ids: vec!["a".into(), "b\"c".into()],
        });
        let data = response_data(&response).unwrap();
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(v, serde_json::json!({"containerIds": ["a", "b\"c"]}));
    }
}
