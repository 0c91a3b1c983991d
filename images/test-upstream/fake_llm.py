"""A scripted fake of the model providers' APIs, for end-to-end tests of the real agent CLIs.

Served by server.py on the paths the CLIs use:
  Anthropic: POST /v1/messages (JSON or SSE with "stream": true), POST /v1/messages/count_tokens
  OpenAI:    POST /v1/responses (JSON or SSE), GET /v1/models

Every request's credential is compared with $FAKE_LLM_KEY (x-api-key or Authorization: Bearer);
a mismatch gets 401 and is logged. Only a sha256 digest of a received credential is ever logged.

The script ($FAKE_LLM_SCRIPT, JSON) is a list of turns; the turn answered is the number of
tool results already in the request (stateless, so retries and side requests are harmless):
  {"text": "..."}           an assistant message ("{last_tool_result}" is replaced by the
                            text of the newest tool result in the request)
  {"bash": "curl ..."}      a tool call running that shell command (Claude Code's Bash tool,
                            Codex's shell tool, whichever the request offers)
Requests that offer no tools (titles, summaries) get a short text answer.
"""
import hashlib
import json
import os

DEFAULT_SCRIPT = [{"text": "hello from the fake model"}]


def script():
    raw = os.environ.get("FAKE_LLM_SCRIPT")
    return json.loads(raw) if raw else DEFAULT_SCRIPT


def digest(v):
    return "sha256:" + hashlib.sha256(v.encode()).hexdigest()


def credential(headers):
    key = headers.get("x-api-key")
    if key:
        return key
    auth = headers.get("Authorization", "")
    return auth[7:] if auth.lower().startswith("bearer ") else auth


def handles(path):
    return path in ("/v1/messages", "/v1/messages/count_tokens", "/v1/responses", "/v1/models")


def decode(encoding, body):
    """Undoes a request Content-Encoding (gzip, deflate, zstd when a module for it exists)."""
    enc = encoding.strip().lower()
    if not enc or enc == "identity":
        return body
    import zlib
    if enc in ("gzip", "x-gzip"):
        return zlib.decompress(body, 16 + zlib.MAX_WBITS)
    if enc == "deflate":
        return zlib.decompress(body)
    if enc == "zstd":
        try:
            import zstandard
            return zstandard.ZstdDecompressor().decompressobj().decompress(body)
        except ImportError:
            pass
    return body


def sse(events):
    out = []
    for name, data in events:
        out.append("event: %s\ndata: %s\n\n" % (name, json.dumps(data)))
    return "".join(out).encode()


def text_of(content):
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(text_of(c.get("text", c.get("content", ""))) if isinstance(c, dict) else str(c) for c in content)
    return str(content)


def handle(handler, path, body, log):
    """Answers one request; returns True when it was a fake-provider path."""
    if not handles(path):
        return False
    if path == "/v1/responses" and handler.command == "GET":
        # Codex tries a WebSocket transport first; the fake speaks HTTPS (SSE) only.
        log({"event": "llm", "api": "openai", "path": path, "websocket": True, "auth_ok": True,
             "credential": digest(credential(handler.headers)), "turn": None})
        handler.reply(404, b'{"error":{"message":"no websocket transport"}}', "application/json")
        return True
    body = decode(handler.headers.get("Content-Encoding", ""), body)
    want = os.environ.get("FAKE_LLM_KEY", "")
    got = credential(handler.headers)
    ok = bool(want) and got == want
    try:
        req = json.loads(body or b"{}")
    except ValueError:
        req = {}
    api = "openai" if path in ("/v1/responses", "/v1/models") else "anthropic"
    entry = {"event": "llm", "api": api, "path": path, "auth_ok": ok, "credential": digest(got),
             "encoding": handler.headers.get("Content-Encoding"), "parsed": bool(req),
             "stream": bool(req.get("stream")), "model": req.get("model"),
             "tools": sorted(offered_tools(req))}
    if not ok:
        log(dict(entry, turn=None))
        err = {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
        handler.reply(401, json.dumps(err).encode(), "application/json")
        return True
    if path == "/v1/models":
        log(dict(entry, turn=None))
        doc = {"object": "list", "data": [{"id": "gpt-5-codex", "object": "model", "owned_by": "fake"}]}
        handler.reply(200, json.dumps(doc).encode(), "application/json")
        return True
    if path == "/v1/messages/count_tokens":
        log(dict(entry, turn=None))
        handler.reply(200, json.dumps({"input_tokens": 42}).encode(), "application/json")
        return True
    if api == "anthropic":
        turn, last = anthropic_turn(req)
    else:
        turn, last = openai_turn(req)
    steps = script()
    step = steps[min(turn, len(steps) - 1)] if offered_tools(req) else {"text": "ok"}
    if "text" in step:
        step = {"text": step["text"].replace("{last_tool_result}", last or "")}
    log(dict(entry, turn=turn, step=step, last_tool_result=(last or "")[:2000]))
    if api == "anthropic":
        anthropic_reply(handler, req, step, turn)
    else:
        openai_reply(handler, req, step, turn)
    return True


# --- Anthropic Messages API ---------------------------------------------------------------

def anthropic_turn(req):
    n, last = 0, None
    for m in req.get("messages") or []:
        if isinstance(m.get("content"), list):
            for c in m["content"]:
                if isinstance(c, dict) and c.get("type") == "tool_result":
                    n += 1
                    last = text_of(c.get("content", ""))
    return n, last


def anthropic_reply(handler, req, step, turn):
    model = req.get("model") or "claude-fake"
    mid = "msg_fake_%d" % turn
    usage = {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    if "bash" in step:
        block = {"type": "tool_use", "id": "toolu_fake_%d" % turn, "name": "Bash",
                 "input": {"command": step["bash"], "description": "run a command"}}
        stop = "tool_use"
    else:
        block = {"type": "text", "text": step["text"]}
        stop = "end_turn"
    if not req.get("stream"):
        doc = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": [block],
               "stop_reason": stop, "stop_sequence": None, "usage": usage}
        handler.reply(200, json.dumps(doc).encode(), "application/json")
        return
    start = dict(block, input={}) if block["type"] == "tool_use" else {"type": "text", "text": ""}
    delta = ({"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
             if block["type"] == "tool_use" else {"type": "text_delta", "text": block["text"]})
    events = [
        ("message_start", {"type": "message_start", "message": {
            "id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": dict(usage, output_tokens=1)}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": start}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                           "usage": {"output_tokens": 5}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    handler.reply(200, sse(events), "text/event-stream")


# --- OpenAI Responses API -----------------------------------------------------------------

def openai_turn(req):
    n, last = 0, None
    items = req.get("input")
    for it in items if isinstance(items, list) else []:
        if isinstance(it, dict) and it.get("type") in ("function_call_output", "custom_tool_call_output"):
            n += 1
            out = it.get("output", "")
            if isinstance(out, list):  # content items, e.g. code mode's input_text parts
                out = "".join(c.get("text", "") for c in out if isinstance(c, dict))
            last = out if isinstance(out, str) else json.dumps(out)
    return n, last


def offered_tools(req):
    """Every tool a Responses request offers, by name: the top-level `tools` and the members of
    the namespaces in `additional_tools` input items (Codex >= 0.16x)."""
    out = {}

    def walk(tools, namespace):
        for t in tools or []:
            if not isinstance(t, dict):
                continue
            if t.get("type") == "namespace":
                walk(t.get("tools"), t.get("name"))
            elif t.get("name"):
                out[t["name"]] = dict(t, namespace=namespace)

    walk(req.get("tools"), None)
    items = req.get("input")
    for it in items if isinstance(items, list) else []:
        if isinstance(it, dict) and it.get("type") == "additional_tools":
            walk(it.get("tools"), None)
    return out


def codex_tool_call(req, command, turn):
    """A tool call that makes Codex run `command` in a shell, in whichever form it offers: code
    mode's JavaScript `exec` (calling the nested `exec_command`), or a classic shell function."""
    names = offered_tools(req)
    call = {"id": "fc_fake_%d" % turn, "call_id": "call_fake_%d" % turn, "status": "completed"}
    if names.get("exec", {}).get("type") == "custom":
        js = ("const r = await tools.exec_command({cmd: %s, tty: false, yield_time_ms: 30000});\n"
              "text(typeof r === 'string' ? r : (r.output ?? JSON.stringify(r)));\n") % json.dumps(command)
        item = dict(call, type="custom_tool_call", name="exec", input=js)
        if names["exec"].get("namespace"):
            item["namespace"] = names["exec"]["namespace"]
        return item
    call["type"] = "function_call"
    if "exec_command" in names:
        return dict(call, name="exec_command", arguments=json.dumps({"cmd": command}))
    if "shell_command" in names:
        return dict(call, name="shell_command", arguments=json.dumps({"command": command}))
    return dict(call, name="shell", arguments=json.dumps({"command": ["bash", "-lc", command]}))


def openai_reply(handler, req, step, turn):
    rid = "resp_fake_%d" % turn
    if "bash" in step:
        item = codex_tool_call(req, step["bash"], turn)
    else:
        item = {"type": "message", "id": "msg_fake_%d" % turn, "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": step["text"], "annotations": []}]}
    usage = {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15}
    base = {"id": rid, "object": "response", "model": req.get("model") or "gpt-fake", "created_at": 0}
    if not req.get("stream"):
        doc = dict(base, status="completed", output=[item], usage=usage)
        handler.reply(200, json.dumps(doc).encode(), "application/json")
        return
    events = [
        ("response.created", {"type": "response.created", "response": dict(base, status="in_progress", output=[])}),
        ("response.output_item.added", {"type": "response.output_item.added", "output_index": 0, "item": item}),
    ]
    if item["type"] == "message":
        events.append(("response.output_text.delta", {"type": "response.output_text.delta", "item_id": item["id"],
                                                      "output_index": 0, "content_index": 0,
                                                      "delta": step["text"]}))
    events += [
        ("response.output_item.done", {"type": "response.output_item.done", "output_index": 0, "item": item}),
        ("response.completed", {"type": "response.completed",
                                "response": dict(base, status="completed", output=[item], usage=usage)}),
    ]
    handler.reply(200, sse(events), "text/event-stream")
