//! The request body `dlpbench` and `dlpprofile` send: an LLM-style chat request whose message
//! content is real source code (shared by both binaries through `#[path]`).
use bytes::Bytes;

/// Source text used as the chat message content.
const TEXT: &str = include_str!("../../../proxy/src/canon.rs");

/// An LLM-style chat request body of about `size` bytes.
pub fn body(size: usize) -> Bytes {
    body_from(TEXT, size)
}

/// [`body`] with `text` (repeated as needed) as the message content.
pub fn body_from(text: &str, size: usize) -> Bytes {
    let mut content = String::new();
    while content.len() < size && !text.is_empty() {
        content.push_str(text);
    }
    let mut v = serde_json::json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "system": "You are a coding agent.",
        "messages": [{"role": "user", "content": ""}],
    });
    let overhead = v.to_string().len();
    let mut cut = size.saturating_sub(overhead).min(content.len());
    while !content.is_char_boundary(cut) {
        cut -= 1;
    }
    content.truncate(cut);
    v["messages"][0]["content"] = serde_json::Value::String(content);
    Bytes::from(v.to_string())
}
