//! Conversation messages, as stored and as sent in `*_message` events.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who produced a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The human (or calling program).
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
    /// An error recorded in the conversation.
    Error,
}

/// The finer kind of a message (AgentX's `subtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Subtype {
    /// A user message.
    #[serde(rename = "user")]
    User,
    /// An assistant text reply.
    #[serde(rename = "assistant")]
    Assistant,
    /// A tool call the assistant made.
    #[serde(rename = "tool-call")]
    ToolCall,
    /// The result of a tool call.
    #[serde(rename = "tool-result")]
    ToolResult,
    /// An error.
    #[serde(rename = "error")]
    Error,
}

/// One part of a multi-part content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// An image, base64.
    Image {
        /// Base64 data.
        data: String,
        /// `image/png`, ...
        #[serde(rename = "mediaType")]
        media_type: String,
    },
    /// A file, base64.
    File {
        /// Base64 data.
        data: String,
        /// MIME type.
        #[serde(rename = "mediaType")]
        media_type: String,
        /// Optional file name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
    },
}

/// Message content: a string or an array of parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Text, images and files.
    Parts(Vec<ContentPart>),
}

impl Content {
    /// The text of the content: the string, or the text parts joined.
    pub fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(""),
        }
    }

    /// Size in bytes of what the content carries (text and base64 data).
    pub fn byte_len(&self) -> usize {
        match self {
            Content::Text(t) => t.len(),
            Content::Parts(parts) => parts
                .iter()
                .map(|p| match p {
                    ContentPart::Text { text } => text.len(),
                    ContentPart::Image { data, .. } | ContentPart::File { data, .. } => data.len(),
                })
                .sum(),
        }
    }

    /// True when there is nothing in it.
    pub fn is_empty(&self) -> bool {
        match self {
            Content::Text(t) => t.is_empty(),
            Content::Parts(p) => p.is_empty(),
        }
    }
}

impl From<&str> for Content {
    fn from(s: &str) -> Self {
        Content::Text(s.to_string())
    }
}

impl From<String> for Content {
    fn from(s: String) -> Self {
        Content::Text(s)
    }
}

/// Token usage of one model reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

/// A tool call made by the assistant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ToolCall {
    /// The provider's id for the call; pairs it with its result.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The parsed input.
    pub input: Value,
}

/// The result of a tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ToolResult {
    /// The call this answers.
    pub tool_call_id: String,
    /// The tool's name.
    pub name: String,
    /// What the tool returned (or the error text).
    pub output: String,
    /// True when the tool failed.
    #[serde(default)]
    pub is_error: bool,
}

/// A message of a conversation. One flat shape for every subtype keeps the stored format and the
/// wire format identical; the optional fields belong to the subtypes named on them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// `msg_…`
    pub id: String,
    /// Who produced it.
    pub role: Role,
    /// What kind of message it is.
    pub subtype: Subtype,
    /// Text or parts (user, assistant, error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// Creation time, ms.
    pub timestamp: i64,
    /// Token usage (assistant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Why the model stopped (assistant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// The error's code (error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// The call (tool-call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call: Option<ToolCall>,
    /// The result (tool-result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_result: Option<ToolResult>,
}

impl Message {
    fn base(id: String, role: Role, subtype: Subtype, timestamp: i64) -> Self {
        Message {
            id,
            role,
            subtype,
            content: None,
            timestamp,
            usage: None,
            stop_reason: None,
            error_code: None,
            tool_call: None,
            tool_result: None,
        }
    }

    /// A user message.
    pub fn user(id: String, content: Content, timestamp: i64) -> Self {
        Message {
            content: Some(content),
            ..Self::base(id, Role::User, Subtype::User, timestamp)
        }
    }

    /// An assistant text reply.
    pub fn assistant(
        id: String,
        text: String,
        timestamp: i64,
        usage: Option<Usage>,
        stop_reason: Option<String>,
    ) -> Self {
        Message {
            content: Some(Content::Text(text)),
            usage,
            stop_reason,
            ..Self::base(id, Role::Assistant, Subtype::Assistant, timestamp)
        }
    }

    /// A tool call.
    pub fn tool_call(id: String, call: ToolCall, timestamp: i64) -> Self {
        Message {
            tool_call: Some(call),
            ..Self::base(id, Role::Assistant, Subtype::ToolCall, timestamp)
        }
    }

    /// A tool result.
    pub fn tool_result(id: String, result: ToolResult, timestamp: i64) -> Self {
        Message {
            tool_result: Some(result),
            ..Self::base(id, Role::Tool, Subtype::ToolResult, timestamp)
        }
    }

    /// An error recorded in the conversation.
    pub fn error(id: String, text: String, code: Option<String>, timestamp: i64) -> Self {
        Message {
            content: Some(Content::Text(text)),
            error_code: code,
            ..Self::base(id, Role::Error, Subtype::Error, timestamp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_message_json_is_agentx_shaped() {
        let m = Message::user("msg_1".into(), "hi".into(), 5);
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"id":"msg_1","role":"user","subtype":"user","content":"hi","timestamp":5})
        );
    }

    #[test]
    fn content_parts_parse() {
        let c: Content = serde_json::from_value(json!([
            {"type":"text","text":"a"},
            {"type":"image","data":"AAA=","mediaType":"image/png"}
        ]))
        .unwrap();
        assert_eq!(c.text(), "a");
        assert_eq!(c.byte_len(), 5);
    }
}
