//! An incremental Server-Sent Events parser: bytes in, events out, no I/O.
//!
//! It follows the WHATWG `text/event-stream` rules: lines end with CRLF, LF or CR (a CRLF split
//! across two chunks counts once); a line starting with `:` is a comment; `field: value` drops
//! one space after the colon; `data` lines of one event are joined with `\n`; an empty line
//! dispatches the event; a leading byte-order mark is skipped. Chunks may be split anywhere,
//! even inside a multi-byte UTF-8 character, because lines are decoded only once complete.
//!
//! Two deliberate leniencies, for servers seen in the wild:
//! - at end of input, an event whose closing blank line never came is still delivered;
//! - a non-standard `error: <json>` line (llama.cpp writes its mid-stream errors that way) is
//!   delivered as an event named `error` with that data, instead of being ignored.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` name; `message` when the server named none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last `id:` seen on the stream, if any.
    pub id: Option<String>,
}

/// The parser's state between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line being read, not yet terminated.
    line: Vec<u8>,
    /// The previous chunk ended with CR: a LF starting the next one belongs to that line end.
    skip_lf: bool,
    /// Whether the start of the stream (and its possible BOM) is behind us.
    started: bool,
    /// The event being assembled.
    event: Option<String>,
    data: String,
    /// Whether any `data` field was seen for the event being assembled.
    has_data: bool,
    last_id: Option<String>,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk; complete events are pushed to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) {
        if self.skip_lf {
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
                self.skip_lf = false;
            } else if !chunk.is_empty() {
                self.skip_lf = false;
            }
        }
        if !self.started {
            // The BOM may itself be split; hold bytes until we can tell.
            let have = self.line.len() + chunk.len();
            if have < BOM.len() && BOM.starts_with(&[self.line.as_slice(), chunk].concat()) {
                self.line.extend_from_slice(chunk);
                return;
            }
            self.started = true;
            let mut head = std::mem::take(&mut self.line);
            head.extend_from_slice(chunk);
            let body = head.strip_prefix(BOM).unwrap_or(&head).to_vec();
            self.feed_lines(&body, out);
            return;
        }
        self.feed_lines(chunk, out);
    }

    fn feed_lines(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) {
        while let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let terminator = chunk[end];
            if self.line.is_empty() {
                self.process_line(&chunk[..end], out);
            } else {
                self.line.extend_from_slice(&chunk[..end]);
                let line = std::mem::take(&mut self.line);
                self.process_line(&line, out);
            }
            chunk = &chunk[end + 1..];
            if terminator == b'\r' {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
        }
        self.line.extend_from_slice(chunk);
    }

    /// Ends the stream: a last line without its newline, and an event without its blank line,
    /// are delivered.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.started {
            self.started = true;
            let head = std::mem::take(&mut self.line);
            self.line = head.strip_prefix(BOM).unwrap_or(&head).to_vec();
        }
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, out);
        }
        self.dispatch(out);
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => self.push_data(&value),
            b"event" => self.event = Some(value.into_owned()),
            b"id" if !value.contains('\0') => self.last_id = Some(value.into_owned()),
            b"error" => {
                self.event = Some("error".into());
                self.push_data(&value);
            }
            // `retry` (reconnection delay) does not apply: replies are never resumed.
            _ => {}
        }
    }

    fn push_data(&mut self, value: &str) {
        if self.has_data {
            self.data.push('\n');
        }
        self.data.push_str(value);
        self.has_data = true;
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if !self.has_data {
            return;
        }
        self.has_data = false;
        out.push(SseEvent {
            event: event.unwrap_or_else(|| "message".into()),
            data: std::mem::take(&mut self.data),
            id: self.last_id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out);
        }
        p.finish(&mut out);
        out
    }

    fn parse(input: &str) -> Vec<SseEvent> {
        parse_chunks(&[input.as_bytes()])
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: None,
        }
    }

    #[test]
    fn named_events_and_default_name() {
        let out = parse("event: ping\ndata: {}\n\ndata: hello\n\n");
        assert_eq!(out, vec![ev("ping", "{}"), ev("message", "hello")]);
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let out = parse("data: a\ndata:b\ndata:  c\ndata\n\n");
        assert_eq!(out, vec![ev("message", "a\nb\n c\n")]);
    }

    #[test]
    fn comments_and_unknown_fields_are_ignored() {
        let out = parse(": keep-alive\nfoo: bar\nretry: 10\ndata: x\n\n:\n\n");
        assert_eq!(out, vec![ev("message", "x")]);
    }

    #[test]
    fn blank_lines_without_data_dispatch_nothing_and_reset_the_name() {
        let out = parse("event: a\n\n\n\ndata: x\n\n");
        assert_eq!(out, vec![ev("message", "x")]);
    }

    #[test]
    fn crlf_cr_and_lf_line_ends() {
        let out = parse("data: 1\r\n\r\ndata: 2\r\rdata: 3\n\n");
        assert_eq!(
            out,
            vec![ev("message", "1"), ev("message", "2"), ev("message", "3")]
        );
    }

    #[test]
    fn ids_are_kept() {
        let out = parse("id: 7\ndata: x\n\ndata: y\n\n");
        assert_eq!(out[0].id.as_deref(), Some("7"));
        assert_eq!(out[1].id.as_deref(), Some("7"));
    }

    #[test]
    fn a_final_event_without_its_blank_line_is_delivered() {
        assert_eq!(parse("data: [DONE]"), vec![ev("message", "[DONE]")]);
        assert_eq!(parse("data: [DONE]\n"), vec![ev("message", "[DONE]")]);
    }

    #[test]
    fn llama_cpp_error_lines_become_error_events() {
        let out = parse("error: {\"error\":{\"message\":\"boom\"}}\n\n");
        assert_eq!(out, vec![ev("error", "{\"error\":{\"message\":\"boom\"}}")]);
    }

    #[test]
    fn a_bom_is_skipped_even_when_split() {
        let input = b"\xEF\xBB\xBFdata: x\n\n";
        for split in 0..input.len() {
            let out = parse_chunks(&[&input[..split], &input[split..]]);
            assert_eq!(out, vec![ev("message", "x")], "split at {split}");
        }
        // Only a leading BOM is special.
        assert_eq!(
            parse("data: \u{feff}x\n\n"),
            vec![ev("message", "\u{feff}x")]
        );
    }

    const TRANSCRIPT: &str = "event: message_start\r\ndata: {\"type\":\"message_start\"}\r\n\r\n\
        : comment\r\nevent: content_block_delta\r\ndata: {\"text\":\"héllo → 世界 🎉\"}\r\n\r\n\
        event: ping\rdata: {}\r\rdata: line1\ndata: line2\n\n";

    #[test]
    fn every_two_way_split_gives_the_same_events() {
        let whole = parse(TRANSCRIPT);
        assert_eq!(whole.len(), 4);
        assert_eq!(whole[1].data, "{\"text\":\"héllo → 世界 🎉\"}");
        let bytes = TRANSCRIPT.as_bytes();
        for split in 0..=bytes.len() {
            assert_eq!(
                parse_chunks(&[&bytes[..split], &bytes[split..]]),
                whole,
                "{split}"
            );
        }
    }

    #[test]
    fn byte_by_byte_and_three_way_splits_give_the_same_events() {
        let whole = parse(TRANSCRIPT);
        let bytes = TRANSCRIPT.as_bytes();
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_chunks(&singles), whole);
        for a in (0..bytes.len()).step_by(3) {
            for b in (a..bytes.len()).step_by(5) {
                let out = parse_chunks(&[&bytes[..a], &bytes[a..b], &[], &bytes[b..]]);
                assert_eq!(out, whole, "{a} {b}");
            }
        }
    }
}
