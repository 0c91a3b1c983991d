"""A scripted fake model server (vLLM / Ollama / llama.cpp look-alike) for the model-sidecar tests.

Started by `server.py --model-server [--http-port 8000]` (plain HTTP, no TLS, no git), it speaks:
  GET  /health                    200 once ready (503 while "loading"), like llama-server
  GET  /v1/models                 200 {"data":[{"id":$FAKE_MODEL_ID}]} once ready, else 503 (vLLM)
  GET  /api/tags, /api/version    Ollama's model list (once ready) and version
  POST /v1/chat/completions       OpenAI Chat Completions, JSON or SSE ("stream": true); streamed with
                                  "max_tokens": N, it sends N one-token chunks, each flushed
                                  ($FAKE_MODEL_TOKEN_INTERVAL_MS apart), for benchmarks
  POST /v1/responses              OpenAI Responses, JSON or SSE (fake_llm.openai_reply)
  POST /v1/messages               Anthropic Messages, JSON or SSE (fake_llm.anthropic_reply)
  POST /v1/messages/count_tokens  {"input_tokens": 42}
  POST /api/chat, /api/generate   Ollama's native API, JSON or NDJSON stream
Every answer is $FAKE_MODEL_ANSWER (default "hello from the fake model"); with $FAKE_LLM_SCRIPT set,
the Messages and Responses APIs follow that script instead (tool calls included, see fake_llm.py).
No credential is required; a received one is logged as a sha256 digest only.

Readiness: $FAKE_MODEL_READY_AFTER (seconds, default 0) keeps every path but /api/version at 503
"loading" until then, printing a {"event":"loading","progress":N} line each second (what a real
server's progress lines look like to the launcher); $FAKE_MODEL_NEVER_READY=1 never becomes ready.
$FAKE_MODEL_FETCH=URL makes it fetch URL at start-up through the environment's proxy and CA
(HTTPS_PROXY, SSL_CERT_FILE: what vLLM does to download weights from the Hub), ready only once that
succeeded; GET /weights then answers {"bytes": N, "sha256": "…", "status": S, "head": "…"} of what it fetched
(a failure is logged as {"event":"fetch_failed"} and the server never becomes ready).
"""
import hashlib
import json
import os
import threading
import time
import urllib.request

import fake_llm

START = time.monotonic()


def model_id():
    return os.environ.get("FAKE_MODEL_ID", "fake-model")


def answer():
    return os.environ.get("FAKE_MODEL_ANSWER", "hello from the fake model")


def ready_after():
    try:
        return float(os.environ.get("FAKE_MODEL_READY_AFTER") or 0)
    except ValueError:
        return 0.0


def never_ready():
    return os.environ.get("FAKE_MODEL_NEVER_READY", "") not in ("", "0")


FETCHED = {}


def fetch_url():
    return os.environ.get("FAKE_MODEL_FETCH", "")


def fetch(log):
    """Fetches $FAKE_MODEL_FETCH through the environment's proxy (urllib reads HTTPS_PROXY)."""
    url = fetch_url()
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            body = r.read()
            FETCHED.update(bytes=len(body), sha256=hashlib.sha256(body).hexdigest(), status=r.status,
                           head=body[:4096].decode("utf-8", errors="replace"))
        log({"event": "fetched", "url": url, "bytes": len(body)})
    except Exception as e:  # noqa: BLE001 (any failure keeps the model unready)
        log({"event": "fetch_failed", "url": url, "error": str(e)[:200]})


def is_ready():
    if fetch_url() and not FETCHED:
        return False
    return not never_ready() and time.monotonic() - START >= ready_after()


def start_progress(log):
    """Prints loading progress once a second until ready (forever in never-ready mode)."""
    def run():
        if fetch_url():
            fetch(log)
        while not is_ready():
            wait = ready_after()
            pct = 0 if never_ready() or wait <= 0 else min(99, int(100 * (time.monotonic() - START) / wait))
            log({"event": "loading", "model": model_id(), "progress": pct})
            time.sleep(1)
        log({"event": "model_ready", "model": model_id()})
    threading.Thread(target=run, daemon=True).start()


def step_for(req, api):
    """The turn number and scripted step for a request of `api` (anthropic / openai)."""
    if os.environ.get("FAKE_LLM_SCRIPT") and api in ("anthropic", "openai"):
        turn, last = fake_llm.anthropic_turn(req) if api == "anthropic" else fake_llm.openai_turn(req)
        steps = fake_llm.script()
        step = steps[min(turn, len(steps) - 1)] if fake_llm.offered_tools(req) else {"text": "ok"}
        if "text" in step:
            step = {"text": step["text"].replace("{last_tool_result}", last or "")}
        return turn, step
    return 0, {"text": answer()}


def data_sse(chunks):
    """OpenAI Chat Completions streaming: `data:` lines only, then [DONE]."""
    return ("".join("data: %s\n\n" % json.dumps(c) for c in chunks) + "data: [DONE]\n\n").encode()


def token_interval():
    try:
        return float(os.environ.get("FAKE_MODEL_TOKEN_INTERVAL_MS") or 0) / 1000.0
    except ValueError:
        return 0.0


def stream_tokens(handler, base, n):
    """Streams `n` one-token chunks, each written and flushed on its own (HTTP/1.1 chunked), one
    every $FAKE_MODEL_TOKEN_INTERVAL_MS (default 0: as fast as it can): what a real server's
    decode loop looks like on the wire, for time-to-first-token and tokens/s measurements."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    gap = token_interval()

    def chunk(obj):
        data = ("data: %s\n\n" % (json.dumps(obj) if isinstance(obj, dict) else obj)).encode()
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        handler.wfile.flush()

    chunk(dict(base, object="chat.completion.chunk",
               choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]))
    for i in range(n):
        if gap:
            time.sleep(gap)
        chunk(dict(base, object="chat.completion.chunk",
                   choices=[{"index": 0, "delta": {"content": "tok%d " % i}, "finish_reason": None}]))
    chunk(dict(base, object="chat.completion.chunk", choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}],
               usage={"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n}))
    chunk("[DONE]")
    handler.wfile.write(b"0\r\n\r\n")
    handler.wfile.flush()


def chat_completion(handler, req, text):
    base = {"id": "chatcmpl-fake", "created": 0, "model": req.get("model") or model_id()}
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    n = req.get("max_tokens")
    if req.get("stream") and isinstance(n, int) and not isinstance(n, bool) and n > 0:
        stream_tokens(handler, base, min(n, 100000))
        return
    if not req.get("stream"):
        doc = dict(base, object="chat.completion", usage=usage, choices=[{
            "index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": text}}])
        handler.reply(200, json.dumps(doc).encode(), "application/json")
        return
    chunk = dict(base, object="chat.completion.chunk")
    chunks = [
        dict(chunk, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]),
        dict(chunk, choices=[{"index": 0, "delta": {"content": text}, "finish_reason": None}]),
        dict(chunk, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}], usage=usage),
    ]
    handler.reply(200, data_sse(chunks), "text/event-stream")


def ollama_native(handler, path, req, text):
    base = {"model": req.get("model") or model_id(), "created_at": "1970-01-01T00:00:00Z"}
    body = {"message": {"role": "assistant", "content": text}} if path == "/api/chat" else {"response": text}
    if req.get("stream", True):  # Ollama streams unless told not to
        empty = {"message": {"role": "assistant", "content": ""}} if path == "/api/chat" else {"response": ""}
        lines = [dict(base, done=False, **body), dict(base, done=True, done_reason="stop", **empty)]
        handler.reply(200, "".join(json.dumps(x) + "\n" for x in lines).encode(), "application/x-ndjson")
    else:
        handler.reply(200, json.dumps(dict(base, done=True, done_reason="stop", **body)).encode(),
                      "application/json")


def loading(handler):
    handler.reply(503, json.dumps({"error": {"message": "loading model", "type": "unavailable"}}).encode(),
                  "application/json")


def handle(handler, path, body, log):
    """Answers one request of the model server (every path: unknown ones get 404)."""
    cred = fake_llm.credential(handler.headers)
    entry = {"event": "model", "method": handler.command, "path": path, "ready": is_ready(),
             "credential": fake_llm.digest(cred) if cred else None}
    if path == "/api/version":
        log(entry)
        handler.reply(200, b'{"version":"0.14.0"}', "application/json")
        return
    if not is_ready():
        log(entry)
        loading(handler)
        return
    if handler.command == "GET":
        log(entry)
        if path == "/health":
            handler.reply(200, b'{"status":"ok"}', "application/json")
        elif path == "/v1/models":
            doc = {"object": "list", "data": [{"id": model_id(), "object": "model", "owned_by": "fake"}]}
            handler.reply(200, json.dumps(doc).encode(), "application/json")
        elif path == "/weights":
            handler.reply(200, json.dumps(FETCHED).encode(), "application/json")
        elif path == "/api/tags":
            doc = {"models": [{"name": model_id(), "model": model_id(), "size": 1, "digest": "0" * 64}]}
            handler.reply(200, json.dumps(doc).encode(), "application/json")
        elif path == "/v1/responses":
            handler.reply(404, b'{"error":{"message":"no websocket transport"}}', "application/json")
        else:
            handler.reply(404, b"not found\n", "text/plain")
        return
    body = fake_llm.decode(handler.headers.get("Content-Encoding", ""), body)
    try:
        req = json.loads(body or b"{}")
    except ValueError:
        req = {}
    if not isinstance(req, dict):
        req = {}
    entry.update(stream=bool(req.get("stream")), model=req.get("model"))
    if path == "/v1/messages/count_tokens":
        log(entry)
        handler.reply(200, b'{"input_tokens":42}', "application/json")
    elif path == "/v1/messages":
        turn, step = step_for(req, "anthropic")
        log(dict(entry, api="anthropic", turn=turn, step=step))
        fake_llm.anthropic_reply(handler, req, step, turn)
    elif path == "/v1/responses":
        turn, step = step_for(req, "openai")
        log(dict(entry, api="responses", turn=turn, step=step))
        fake_llm.openai_reply(handler, req, step, turn)
    elif path == "/v1/chat/completions":
        log(dict(entry, api="chat"))
        chat_completion(handler, req, answer())
    elif path in ("/api/chat", "/api/generate"):
        log(dict(entry, api="ollama"))
        ollama_native(handler, path, req, answer())
    else:
        log(entry)
        handler.reply(404, b"not found\n", "text/plain")
