//! Fuzz targets of the core's parsers (see the `agentvm-fuzz` crate for the harness): the
//! Channel's client frame decoder (the server's frame and command parsing), the server frame
//! decoder (the remote runtime's), and the SSE parser of the LLM drivers.
//!
//! Properties: no input panics; a refusal is the typed error; a frame that decodes encodes
//! back to the same frame (decode ∘ encode ∘ decode = decode).

use agentvm::channel::codec::{self, ClientFrame};
use agentvm::llm::sse::{SseEvent, SseParser};
use agentvm::ErrorKind;
use proptest::prelude::*;
use serde_json::json;

/// The wire form of a decoded client frame, as a stock client would send it.
fn encode_client_frame(frame: &ClientFrame) -> String {
    match frame {
        ClientFrame::Ack(id) => json!({ "__ack": id }).to_string(),
        ClientFrame::Subscribe {
            session_id,
            after_cursor,
            respond,
        } => {
            let mut v = json!({ "type": "subscribe", "sessionId": session_id });
            if let Some(c) = after_cursor {
                v["afterCursor"] = json!(c.to_string());
            }
            if *respond {
                v["__subscribeResponse"] = json!(true);
            }
            v.to_string()
        }
        ClientFrame::Unsubscribe { session_id } => {
            json!({ "type": "unsubscribe", "sessionId": session_id }).to_string()
        }
        ClientFrame::Auth { token } => match token {
            Some(t) => {
                json!({ "type": "auth", "headers": { "Authorization": format!("Bearer {t}") } })
                    .to_string()
            }
            None => json!({ "type": "auth" }).to_string(),
        },
        ClientFrame::Request {
            request_id,
            command,
        } => {
            let mut v = serde_json::to_value(command).expect("a command serializes");
            if let (Some(id), Some(data)) = (request_id, v.get_mut("data")) {
                if data.is_null() {
                    *data = json!({});
                }
                data["requestId"] = json!(id);
            }
            v.to_string()
        }
    }
}

/// Frames compared by their wire form (`ClientFrame` has no `PartialEq`).
fn same(a: &ClientFrame, b: &ClientFrame) -> bool {
    encode_client_frame(a) == encode_client_frame(b)
}

#[test]
fn fuzz_client_frame_decoder() {
    let mut decoded = 0;
    agentvm_fuzz::run("client_frame", |input| {
        let text = String::from_utf8_lossy(input);
        let d = codec::decode_client_frame(&text);
        // The server's ack fast path reads what the decoder reads.
        if let Some(id) = codec::plain_ack(&text) {
            match &d.frame {
                Ok(ClientFrame::Ack(decoded)) => assert_eq!(decoded, id),
                other => panic!("plain_ack read {id:?}, the decoder {other:?}"),
            }
        }
        match &d.frame {
            Ok(frame) => {
                decoded += 1;
                let again = codec::decode_client_frame(&encode_client_frame(frame));
                let back = again.frame.unwrap_or_else(|e| {
                    panic!("a decoded frame did not decode again: {:?}", e.error)
                });
                assert!(same(frame, &back), "{frame:?} came back as {back:?}");
            }
            Err(e) => {
                // A refusal is an invalid input, worded short (never echoing a large input).
                assert_eq!(e.error.kind(), ErrorKind::InvalidInput, "{:?}", e.error);
                assert!(
                    e.error.to_string().len() <= 1024 + text.len().min(256),
                    "{}",
                    e.error
                );
            }
        }
    });
    assert!(
        decoded > 20,
        "only {decoded} inputs decoded: the roundtrip was barely tested"
    );
}

#[test]
fn fuzz_server_frame_decoder() {
    agentvm_fuzz::run("server_frame", |input| {
        let text = String::from_utf8_lossy(input);
        if let Err(e) = codec::decode_server_frame(&text) {
            assert_eq!(e.kind(), ErrorKind::Protocol, "{e:?}");
        }
    });
}

/// Every event a whole stream gives, fed in one chunk.
fn sse_whole(input: &[u8]) -> Vec<SseEvent> {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    p.feed(input, &mut out);
    p.finish(&mut out);
    out
}

/// The same, fed in chunks of `size` bytes (cutting lines, CRLFs and UTF-8 characters).
fn sse_chunked(input: &[u8], size: usize) -> Vec<SseEvent> {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    for chunk in input.chunks(size.max(1)) {
        p.feed(chunk, &mut out);
    }
    p.finish(&mut out);
    out
}

#[test]
fn fuzz_sse_parser() {
    agentvm_fuzz::run("sse", |input| {
        let whole = sse_whole(input);
        // Where a stream is cut into chunks changes nothing.
        let size = 1 + input.len() % 7;
        assert_eq!(sse_chunked(input, size), whole, "chunks of {size}");
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A wrapped server frame decodes to its id, cursor and payload, whatever the payload's text.
    #[test]
    fn server_frames_roundtrip(
        conn in 0u64..1_000_000,
        n in 0u64..u64::MAX,
        text in ".*",
        cursor in proptest::option::of(any::<u64>()),
    ) {
        let payload = json!({ "type": "text_delta", "data": { "text": text } });
        let msg_id = format!("conn_{conn}_{n}");
        let frame = codec::wrap(&msg_id, &payload.to_string(), cursor);
        let back = codec::decode_server_frame(&frame).expect("a wrapped frame decodes");
        prop_assert_eq!(back.msg_id.as_deref(), Some(msg_id.as_str()));
        prop_assert_eq!(back.cursor, cursor);
        prop_assert_eq!(back.payload, payload);
    }

    /// An ack for any message id decodes to that id.
    #[test]
    fn acks_roundtrip(id in ".*") {
        let frame = json!({ "__ack": id }).to_string();
        match codec::decode_client_frame(&frame).frame {
            Ok(ClientFrame::Ack(back)) => prop_assert_eq!(back, id),
            other => prop_assert!(false, "{:?}", other),
        }
    }

    /// SSE events written out parse back, however the stream is chunked.
    #[test]
    fn sse_events_roundtrip(
        events in proptest::collection::vec(("[a-z_]{1,12}", "[^\r\n]{0,40}"), 1..8),
        size in 1usize..16,
    ) {
        let mut stream = String::new();
        for (name, data) in &events {
            stream.push_str(&format!("event: {name}\ndata: {data}\n\n"));
        }
        let parsed = sse_chunked(stream.as_bytes(), size);
        let expected: Vec<SseEvent> = events
            .iter()
            .map(|(name, data)| SseEvent { event: name.clone(), data: data.clone(), id: None })
            .collect();
        prop_assert_eq!(parsed, expected);
    }
}

/// Frames that are not JSON objects (or whose `__ack` is not a string) are typed refusals.
#[test]
fn non_object_frames_are_refused_as_invalid_input() {
    for text in ["[]", "1", "\"x\"", "null", "", "{", "{\"__ack\":1}"] {
        let d = codec::decode_client_frame(text);
        let e = d.frame.expect_err(text);
        assert_eq!(e.error.kind(), ErrorKind::InvalidInput, "{text}");
    }
}
