//! The agent's window of history: the recent messages the model is sent, bounded in count and
//! bytes, with no I/O.
//!
//! An agent never holds its whole conversation: it starts from the newest messages the store
//! returns (one backward page) and keeps appending; once the window is over either bound, the
//! oldest messages leave it. It only ever starts at a user message, so the model never sees a
//! tool result without the call that asked for it, nor a reply without its question. The newest
//! turn stays whole even when it alone is over the bounds: the model needs it to answer.

use crate::model::{Message, Subtype};
use std::collections::VecDeque;

/// The bounds of an agent's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowBounds {
    /// At most this many messages.
    pub messages: usize,
    /// At most this many bytes of messages (their stored JSON).
    pub bytes: usize,
}

/// The recent history an agent sends the model.
#[derive(Debug)]
pub(crate) struct Window {
    bounds: WindowBounds,
    /// Oldest first, each with its size.
    messages: VecDeque<(usize, Message)>,
    /// The sum of the sizes.
    bytes: usize,
}

/// A message's size as the store keeps it (its JSON).
pub(crate) fn message_bytes(m: &Message) -> usize {
    serde_json::to_vec(m).map_or(0, |v| v.len())
}

impl Window {
    /// A window over `history` (oldest first): its newest messages that fit.
    pub(crate) fn new(bounds: WindowBounds, history: impl IntoIterator<Item = Message>) -> Self {
        let mut window = Window {
            bounds,
            messages: VecDeque::new(),
            bytes: 0,
        };
        for m in history {
            window.push(m);
        }
        window
    }

    /// Appends a message, then lets the oldest leave while the window is over its bounds.
    pub(crate) fn push(&mut self, message: Message) {
        let size = message_bytes(&message);
        self.bytes = self.bytes.saturating_add(size);
        self.messages.push_back((size, message));
        self.trim();
    }

    /// Drops whole turns from the front while over the bounds, keeping the newest turn.
    fn trim(&mut self) {
        while self.over() {
            // The next turn start after the front; none means the front turn is the newest.
            let Some(next) = self
                .messages
                .iter()
                .skip(1)
                .position(|(_, m)| m.subtype == Subtype::User)
                .map(|i| i + 1)
            else {
                break;
            };
            for (size, _) in self.messages.drain(..next) {
                self.bytes -= size;
            }
        }
        // A window loaded from the middle of a turn starts at its next user message.
        while self
            .messages
            .front()
            .is_some_and(|(_, m)| m.subtype != Subtype::User)
            && self
                .messages
                .iter()
                .any(|(_, m)| m.subtype == Subtype::User)
        {
            if let Some((size, _)) = self.messages.pop_front() {
                self.bytes -= size;
            }
        }
    }

    fn over(&self) -> bool {
        self.messages.len() > self.bounds.messages || self.bytes > self.bounds.bytes
    }

    /// The messages, oldest first, for a model request.
    pub(crate) fn to_vec(&self) -> Vec<Message> {
        self.messages.iter().map(|(_, m)| m.clone()).collect()
    }

    /// How many messages it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    /// How many bytes of messages it holds.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Message;

    fn user(i: usize, text: &str) -> Message {
        Message::user(format!("msg_u{i}"), text.into(), i as i64)
    }
    fn reply(i: usize, text: &str) -> Message {
        Message::assistant(format!("msg_a{i}"), text.into(), i as i64, None, None)
    }

    #[test]
    fn the_window_keeps_the_newest_turns_within_its_bounds() {
        let bounds = WindowBounds {
            messages: 10,
            bytes: 1 << 20,
        };
        let mut w = Window::new(bounds, []);
        for i in 0..100 {
            w.push(user(i, "q"));
            w.push(reply(i, "a"));
            assert!(w.len() <= 10);
        }
        let ids: Vec<_> = w.to_vec().into_iter().map(|m| m.id).collect();
        assert_eq!(ids.first().map(String::as_str), Some("msg_u95"));
        assert_eq!(ids.last().map(String::as_str), Some("msg_a99"));
    }

    #[test]
    fn the_window_is_bounded_in_bytes_by_large_messages() {
        let big = "x".repeat(100_000);
        let bounds = WindowBounds {
            messages: 1000,
            bytes: 350_000,
        };
        let mut w = Window::new(bounds, []);
        for i in 0..200 {
            w.push(user(i, &big));
            w.push(reply(i, "ok"));
            assert!(w.bytes() <= 350_000, "{} bytes at {i}", w.bytes());
        }
        // Three turns of ~100 KB fit; the newest question and its answer are there.
        assert_eq!(w.len(), 6);
        assert_eq!(w.to_vec().last().unwrap().id, "msg_a199");
        assert_eq!(
            w.bytes(),
            w.to_vec().iter().map(message_bytes).sum::<usize>()
        );
    }

    #[test]
    fn the_newest_turn_stays_whole_even_over_the_bounds() {
        let bounds = WindowBounds {
            messages: 2,
            bytes: 10,
        };
        let mut w = Window::new(bounds, [user(0, "old"), reply(0, "a")]);
        w.push(user(1, "a question longer than ten bytes"));
        assert_eq!(w.len(), 1);
        w.push(reply(1, "an answer"));
        w.push(reply(2, "and more"));
        assert_eq!(w.len(), 3);
        assert_eq!(w.to_vec()[0].id, "msg_u1");
    }

    #[test]
    fn a_window_loaded_mid_turn_starts_at_a_user_message() {
        let bounds = WindowBounds {
            messages: 10,
            bytes: 1 << 20,
        };
        let w = Window::new(
            bounds,
            [reply(0, "tail of a turn"), user(1, "q"), reply(1, "a")],
        );
        assert_eq!(w.to_vec()[0].id, "msg_u1");
        assert_eq!(w.len(), 2);
    }
}
