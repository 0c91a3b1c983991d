//! The agent's own result of an unattended `bottle run --prompt`, read from its stdout:
//! Claude Code's `--output-format json` object, or the JSON lines of `codex exec --json`.
//! Carried as the `agent_result` field of `bottle run --json`.

use serde_json::{json, Value};

use crate::manifest::Template;

/// How much of the agent's stdout is kept for [`parse`] (the tail, if it is longer).
pub const STDOUT_CAP: usize = 8 << 20;

/// Appends `chunk` to `buf`, keeping at most [`STDOUT_CAP`] bytes (the newest).
pub fn keep_tail(buf: &mut Vec<u8>, chunk: &[u8]) {
    buf.extend_from_slice(chunk);
    if buf.len() > STDOUT_CAP {
        let cut = buf.len() - STDOUT_CAP;
        buf.drain(..cut);
    }
}

/// The result object of `template`'s run from its stdout, when the agent printed one.
///
/// Claude Code: its last `{"type":"result",…}` object as printed (`session_id`, `result`,
/// `is_error`, `total_cost_usd`, …). Codex: `{"session_id": <thread id>, "result": <last agent
/// message>, "is_error", "usage", "events"}` built from its event lines.
pub fn parse(template: Template, stdout: &[u8]) -> Option<Value> {
    let text = String::from_utf8_lossy(stdout);
    let mut objects = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(Value::is_object);
    match template {
        Template::Claude => objects.rfind(|v| v["type"] == "result").or_else(|| {
            // Pretty-printed (not one line): the whole output is the object.
            serde_json::from_str::<Value>(text.trim())
                .ok()
                .filter(|v| v["type"] == "result")
        }),
        Template::Codex => codex(objects),
        Template::Shell => None,
    }
}

fn codex(events: impl Iterator<Item = Value>) -> Option<Value> {
    let (mut thread, mut result, mut usage, mut error) = (None, None, None, None);
    let mut n = 0usize;
    for e in events {
        n += 1;
        match e["type"].as_str().unwrap_or_default() {
            "thread.started" => thread = e.get("thread_id").cloned(),
            "item.completed" if e["item"]["type"] == "agent_message" => {
                result = e["item"].get("text").cloned()
            }
            // Codex reports transient trouble (transport retries) as `error` events; a turn
            // that completes afterwards succeeded.
            "turn.completed" => {
                usage = e.get("usage").cloned();
                error = None;
            }
            "turn.failed" | "error" => {
                error = e
                    .get("error")
                    .and_then(|x| x.get("message").or(Some(x)))
                    .or_else(|| e.get("message"))
                    .cloned()
            }
            _ => {}
        }
    }
    if n == 0 {
        return None;
    }
    Some(json!({
        "session_id": thread,
        "result": result,
        "is_error": error.is_some(),
        "error": error,
        "usage": usage,
        "events": n,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_result_object_is_found_among_other_output() {
        let out = b"warning: something\n{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"hi\",\"session_id\":\"s-1\"}\n";
        let v = parse(Template::Claude, out).unwrap();
        assert_eq!(v["result"], "hi");
        assert_eq!(v["session_id"], "s-1");
        let pretty = b"{\n  \"type\": \"result\",\n  \"result\": \"x\"\n}\n";
        assert_eq!(parse(Template::Claude, pretty).unwrap()["result"], "x");
        assert_eq!(parse(Template::Claude, b"plain text\n"), None);
        assert_eq!(parse(Template::Shell, out), None);
    }

    #[test]
    fn codex_events_are_summarised() {
        let out = br#"{"type":"thread.started","thread_id":"t-9"}
{"type":"turn.started"}
{"type":"item.completed","item":{"id":"i0","type":"command_execution","command":"ls"}}
{"type":"item.completed","item":{"id":"i1","type":"agent_message","text":"done"}}
{"type":"turn.completed","usage":{"input_tokens":5,"output_tokens":2}}
"#;
        let v = parse(Template::Codex, out).unwrap();
        assert_eq!(v["session_id"], "t-9");
        assert_eq!(v["result"], "done");
        assert_eq!(v["is_error"], false);
        assert_eq!(v["usage"]["output_tokens"], 2);
        assert_eq!(v["events"], 5);
        let retried = br#"{"type":"thread.started","thread_id":"t"}
{"type":"error","message":"Reconnecting... 2/5"}
{"type":"item.completed","item":{"id":"i1","type":"agent_message","text":"fine"}}
{"type":"turn.completed","usage":{}}
"#;
        let v = parse(Template::Codex, retried).unwrap();
        assert_eq!(
            (v["is_error"].clone(), v["result"].clone()),
            (json!(false), json!("fine"))
        );
        let failed = br#"{"type":"thread.started","thread_id":"t"}
{"type":"turn.failed","error":{"message":"403 denied"}}
"#;
        let v = parse(Template::Codex, failed).unwrap();
        assert_eq!(v["is_error"], true);
        assert_eq!(v["error"], "403 denied");
        assert_eq!(parse(Template::Codex, b""), None);
    }

    #[test]
    fn the_kept_tail_is_bounded() {
        let mut b = Vec::new();
        keep_tail(&mut b, &vec![b'a'; STDOUT_CAP]);
        keep_tail(&mut b, b"xyz");
        assert_eq!(b.len(), STDOUT_CAP);
        assert!(b.ends_with(b"xyz"));
    }
}
