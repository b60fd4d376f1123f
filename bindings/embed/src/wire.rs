//! The JSON in and out of [`Embed::request`](crate::Embed::request): a command parsed
//! strictly from its envelope, and a response's `data` cut out of its serialized form.
//!
//! Both sit on the hot path of every binding call, so each has a fast path that touches the
//! text once, and falls back to the slow, careful path for anything unusual (which is also the
//! one that words the errors).

use agentvm::{Command, CommandKind, Error, Response, Result};

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
///
/// With `type` before `data` (how most callers write it) the data is deserialized straight
/// into its request type as it is read; with `data` first (a sorted map: Go's maps, Rust's
/// `serde_json::Map`) its text is only skipped over and parsed once the type is known. Neither
/// goes through serde's buffered `Content` tree, which the derived adjacently tagged
/// `Command` falls back to for data before its tag.
fn parse_direct(json: &str) -> Option<Command> {
    let mut foreign = false;
    let mut de = serde_json::Deserializer::from_str(json);
    let command = serde::Deserializer::deserialize_map(
        &mut de,
        EnvelopeVisitor {
            foreign: &mut foreign,
        },
    )
    .ok()?;
    de.end().ok()?;
    (!foreign).then_some(command)
}

/// Declines the fast path (the checked path words the reason).
fn decline<E: serde::de::Error>() -> E {
    E::custom("not a plain envelope")
}

/// Reads `{"type", "data"}` in either order into the command; any other key declines.
struct EnvelopeVisitor<'f> {
    foreign: &'f mut bool,
}

impl<'de> serde::de::Visitor<'de> for EnvelopeVisitor<'_> {
    type Value = Command;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a request envelope")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Command, A::Error> {
        let mut kind: Option<CommandKind> = None;
        let mut early_data: Option<&'de serde_json::value::RawValue> = None;
        let mut command: Option<Command> = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match (&*key, kind) {
                ("type", None) => {
                    let name = map.next_value::<std::borrow::Cow<'de, str>>()?;
                    kind = Some(CommandKind::from_type_name(&name).ok_or_else(decline)?);
                }
                ("data", Some(k)) if command.is_none() && early_data.is_none() => {
                    command = Some(map.next_value_seed(DataSeed {
                        kind: k,
                        foreign: &mut *self.foreign,
                    })?);
                }
                ("data", None) if early_data.is_none() => early_data = Some(map.next_value()?),
                _ => return Err(decline()),
            }
        }
        match (kind, command, early_data) {
            (Some(_), Some(command), None) => Ok(command),
            (Some(k), None, Some(raw)) => {
                let mut de = serde_json::Deserializer::from_str(raw.get());
                let seed = DataSeed {
                    kind: k,
                    foreign: &mut *self.foreign,
                };
                serde::de::DeserializeSeed::deserialize(seed, &mut de)
                    .map_err(|_| decline::<A::Error>())
            }
            // No data: the request's defaults, which the checked path fills in.
            _ => Err(decline()),
        }
    }
}

/// The data of a command of a known kind, noting any field but `requestId` as foreign.
struct DataSeed<'f> {
    kind: CommandKind,
    foreign: &'f mut bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for DataSeed<'_> {
    type Value = Command;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<Command, D::Error> {
        let foreign = self.foreign;
        let mut note = |path: serde_ignored::Path<'_>| {
            // Only the envelope's own request id may ride along in `data`.
            if !matches!(path, serde_ignored::Path::Map { parent: serde_ignored::Path::Root, ref key } if key == "requestId")
            {
                *foreign = true;
            }
        };
        self.kind
            .deserialize_data(serde_ignored::Deserializer::new(deserializer, &mut note))
    }
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
    fn the_direct_path_reads_either_key_order_and_declines_anything_foreign() {
        let expected = Command::ImageGet(agentvm::ImageGetRequest {
            image_id: "img_1".into(),
        });
        for json in [
            r#"{"type":"image_get_request","data":{"imageId":"img_1"}}"#,
            r#"{"data":{"imageId":"img_1"},"type":"image_get_request"}"#,
            r#"{"data":{"requestId":"r","imageId":"img_1"},"type":"image_get_request"}"#,
            r#"{ "type" : "image_get_request" , "data" : { "imageId" : "img\u005f1" } }"#,
        ] {
            assert_eq!(parse_direct(json).as_ref(), Some(&expected), "{json}");
        }
        // Each of these is left to the checked path, which accepts or words it.
        for json in [
            r#"{"type":"image_get_request","data":{"imageId":"img_1","bogus":1}}"#,
            r#"{"data":{"imageId":"img_1","bogus":1},"type":"image_get_request"}"#,
            r#"{"type":"image_get_request","data":{"imageId":"img_1"},"requestId":"r"}"#,
            r#"{"type":"image_get_request","type":"image_get_request","data":{"imageId":"i"}}"#,
            r#"{"type":"image_get_request","data":{"imageId":"i"},"data":{"imageId":"i"}}"#,
            r#"{"data":{"imageId":"i"},"data":{"imageId":"i"},"type":"image_get_request"}"#,
            r#"{"type":"nope_request","data":{}}"#,
            r#"{"data":{},"type":"nope_request"}"#,
            r#"{"type":"container_list_request"}"#,
            r#"{"data":{"imageId":"i"}}"#,
            r#"{"type":"image_get_request","data":{"imageId":"i"}} x"#,
            r#"{"data":{"imageId":"i"} "type":"image_get_request"}"#,
            r#"["image_get_request",{"imageId":"i"}]"#,
        ] {
            assert_eq!(parse_direct(json), None, "{json}");
        }
        // A request id nested deeper than the data's top is foreign too.
        let nested = r#"{"data":{"containerId":"c","config":{"requestId":"r"}},"type":"image_create_request"}"#;
        assert_eq!(parse_direct(nested), None);
        assert!(refused(nested).contains("requestId"), "{}", refused(nested));
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
