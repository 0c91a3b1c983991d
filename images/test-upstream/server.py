#!/usr/bin/env python3
"""bottle test upstream: the fake "outside world" of the end-to-end tests.

An HTTPS (and optionally plain HTTP) server that logs EVERY request it receives as one JSON line on
stdout, so a test can assert that a blocked request never reached it ("the upstream logged nothing").

Endpoints:
  GET  /                      200 "ok"
  ANY  /echo                  200, JSON: method, path, headers, body length (and body, up to 64 KiB)
  ANY  /status/<code>         that status code
  ANY  /git/<repo>.git/...    git smart HTTP (git http-backend) over bare repos in --git-root
                              (with $UPSTREAM_GIT_TOKEN set: only with that token, Bearer or Basic);
                              a repository "repo.git" with one commit on "main" is created at start,
                              and pushes are accepted (http.receivepack=true).
  else                        404
With --model-server it is a fake model server instead (plain HTTP only): see fake_model.py.

TLS certificate: --cert/--key files, or the environment variables UPSTREAM_CERT_PEM/UPSTREAM_KEY_PEM
(PEM text), or else a fresh CA and leaf are generated at start with openssl for the --name values. A
generated CA is written to <--state-dir>/ca.pem and printed as {"event":"ca","pem":"..."} on stdout.

Log lines (stdout, one JSON object each):
  {"event":"listening","scheme":"https","port":443}
  {"event":"ca","pem":"-----BEGIN CERTIFICATE-----..."}
  {"event":"request","scheme":"https","client":"10.0.0.2","method":"GET","path":"/echo?x=1",
   "version":"HTTP/1.1","headers":[["Host","upstream.test"],...],"body_len":0,"body":""}
"""

import argparse
import hashlib
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY_LOG_LIMIT = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
LOG_LOCK = threading.Lock()


def log(obj):
    """Writes one JSON line to stdout, atomically with respect to other threads."""
    line = json.dumps(obj, separators=(",", ":"))
    with LOG_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def run(cmd, **kw):
    """Runs a command, raising with its stderr on failure."""
    res = subprocess.run(cmd, capture_output=True, **kw)
    if res.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({res.returncode}): {res.stderr.decode(errors='replace')}")
    return res.stdout


def generate_cert(state_dir, names):
    """Generates a throw-away CA and a leaf for `names` with openssl. Returns (cert, key, ca) paths."""
    ca_key, ca_pem = os.path.join(state_dir, "ca.key"), os.path.join(state_dir, "ca.pem")
    leaf_key, leaf_csr = os.path.join(state_dir, "leaf.key"), os.path.join(state_dir, "leaf.csr")
    leaf_pem, ext = os.path.join(state_dir, "leaf.pem"), os.path.join(state_dir, "leaf.ext")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca_pem, "-days", "7",
         "-subj", "/CN=bottle test upstream CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    run(["openssl", "req", *ec, "-keyout", leaf_key, "-out", leaf_csr, "-subj", f"/CN={names[0]}"])
    sans = []
    for n in names:
        is_ip = re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+", n) is not None
        sans.append(("IP:" if is_ip else "DNS:") + n)
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\n")
        f.write("keyUsage=critical,digitalSignature\n")
        f.write("extendedKeyUsage=serverAuth\n")
        f.write("subjectAltName=" + ",".join(sans) + "\n")
    run(["openssl", "x509", "-req", "-in", leaf_csr, "-CA", ca_pem, "-CAkey", ca_key,
         "-CAcreateserial", "-out", leaf_pem, "-days", "7", "-extfile", ext])
    with open(ca_pem) as f:
        log({"event": "ca", "pem": f.read()})
    return leaf_pem, leaf_key


def make_git_repo(root, name="repo.git"):
    """Creates a bare repository with one commit (README) on branch main, accepting pushes."""
    path = os.path.join(root, name)
    if os.path.exists(path):
        return
    git = ["git", f"--git-dir={path}"]
    env = dict(os.environ, GIT_AUTHOR_NAME="upstream", GIT_AUTHOR_EMAIL="upstream@test",
               GIT_COMMITTER_NAME="upstream", GIT_COMMITTER_EMAIL="upstream@test")
    run(["git", "init", "-q", "--bare", path])
    run(git + ["config", "http.receivepack", "true"])
    blob = run(git + ["hash-object", "-w", "--stdin"], input=b"hello from the test upstream\n").strip()
    tree = run(git + ["mktree"], input=b"100644 blob " + blob + b"\tREADME\n").strip()
    commit = run(git + ["commit-tree", tree.decode(), "-m", "initial"], env=env).strip()
    run(git + ["update-ref", "refs/heads/main", commit.decode()])
    run(git + ["symbolic-ref", "HEAD", "refs/heads/main"])


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fake_llm  # noqa: E402  (the scripted model-provider APIs)
import fake_model  # noqa: E402  (the fake model server of --model-server)


class Handler(BaseHTTPRequestHandler):
    """Logs every request, then dispatches on the path."""

    protocol_version = "HTTP/1.1"
    server_version = "bottle-test-upstream"
    scheme = "https"
    git_root = "/tmp/git"
    model_server = False

    def log_message(self, fmt, *args):  # the JSON request log replaces http.server's own
        pass

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                if len(out) + size > MAX_BODY:
                    raise ValueError("body too large")
                out += self.rfile.read(size)
                self.rfile.readline(3)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length) if length > 0 else b""

    def handle_any(self):
        try:
            body = self.read_body()
        except (ValueError, OSError) as e:
            log({"event": "bad_request", "error": str(e), "path": self.path})
            self.reply(400, b"bad request\n")
            return
        log({
            "event": "request",
            "scheme": self.scheme,
            "client": self.client_address[0],
            "method": self.command,
            "path": self.path,
            "version": self.request_version,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_len": len(body),
            "body": body[:BODY_LOG_LIMIT].decode("utf-8", errors="replace"),
        })
        path = self.path.split("?", 1)[0]
        if self.model_server:
            fake_model.handle(self, path, body, log)
        elif fake_llm.handle(self, path, body, log):
            pass
        elif path == "/":
            self.reply(200, b"ok\n", "text/plain")
        elif path == "/echo":
            # Credentials are echoed as a digest: the proxy never returns the bottle's own
            # secrets to the agent (a reflection is cut), so the raw value cannot come back.
            doc = {
                "method": self.command,
                "path": self.path,
                "headers": [
                    [k, "sha256:" + hashlib.sha256(v.encode()).hexdigest()]
                    if k.lower() in ("authorization", "proxy-authorization", "x-api-key")
                    else [k, v]
                    for k, v in self.headers.items()
                ],
                "body_len": len(body),
                "body": body[:BODY_LOG_LIMIT].decode("utf-8", errors="replace"),
            }
            self.reply(200, json.dumps(doc).encode(), "application/json")
        elif path.startswith("/status/") and path[8:].isdigit() and 200 <= int(path[8:]) <= 599:
            self.reply(int(path[8:]), f"status {path[8:]}\n".encode(), "text/plain")
        elif path.startswith("/git/"):
            self.git(body)
        else:
            self.reply(404, b"not found\n", "text/plain")

    def reply(self, code, body, ctype="text/plain", extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def git(self, body):
        path, _, query = self.path.partition("?")
        want = os.environ.get("UPSTREAM_GIT_TOKEN")
        if want:
            # Like a forge: the git endpoints need `Authorization: Bearer <token>` (or Basic with
            # the token as password); the token itself is never logged.
            got = self.headers.get("Authorization", "")
            ok = got == "Bearer " + want
            if got.startswith("Basic "):
                import base64
                try:
                    ok = base64.b64decode(got[6:]).decode().partition(":")[2] == want
                except ValueError:
                    ok = False
            if not ok:
                log({"event": "git_auth", "ok": False, "had_header": bool(got)})
                self.reply(401, b"token required\n")
                return
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": self.git_root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path[len("/git"):],
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_USER": "agent",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        for k, v in self.headers.items():
            key = "HTTP_" + k.upper().replace("-", "_")
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                env[key] = v
        res = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True)
        out = res.stdout
        head, sep, payload = out.partition(b"\r\n\r\n")
        if not sep:
            head, sep, payload = out.partition(b"\n\n")
        if res.returncode != 0 and not sep:
            err = res.stderr.decode(errors="replace")
            log({"event": "git_error", "stderr": err})
            self.reply(500, b"git http-backend failed\n")
            return
        code, headers, ctype = 200, [], "application/octet-stream"
        for line in head.decode(errors="replace").splitlines():
            k, _, v = line.partition(":")
            k, v = k.strip(), v.strip()
            if k.lower() == "status":
                code = int(v.split()[0])
            elif k.lower() == "content-type":
                ctype = v
            elif k:
                headers.append((k, v))
        self.reply(code, payload, ctype, headers)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any


def serve(server):
    try:
        server.serve_forever()
    except Exception as e:  # noqa: BLE001 - a server thread must log, not vanish
        log({"event": "server_error", "error": str(e)})


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        log({"event": "connection_error", "client": client_address[0],
             "error": str(sys.exc_info()[1])})


def main():
    p = argparse.ArgumentParser(description="bottle e2e test upstream (logs every request as JSON)")
    p.add_argument("--https-port", type=int, default=443)
    p.add_argument("--http-port", type=int, default=80, help="0 disables plain HTTP")
    p.add_argument("--cert", help="PEM certificate chain file (default: $UPSTREAM_CERT_PEM or generated)")
    p.add_argument("--key", help="PEM private key file (default: $UPSTREAM_KEY_PEM or generated)")
    p.add_argument("--name", action="append", help="DNS name/IP for a generated leaf (repeatable)")
    p.add_argument("--state-dir", default=None, help="where generated files go (default: a temp dir)")
    p.add_argument("--git-root", default=None, help="bare repositories (default: <state-dir>/git)")
    p.add_argument("--model-server", action="store_true",
                   help="be a fake model server (fake_model.py) on plain HTTP --http-port (default 8000) only")
    args = p.parse_args()

    if args.model_server:
        port = args.http_port if "--http-port" in " ".join(sys.argv) else 8000
        model_handler = type("ModelHandler", (Handler,), {"scheme": "http", "model_server": True})
        srv = QuietServer(("0.0.0.0", port), model_handler)
        log({"event": "listening", "scheme": "http", "port": port, "model_server": True,
             "model": fake_model.model_id()})
        fake_model.start_progress(log)
        serve(srv)
        return

    state = args.state_dir or tempfile.mkdtemp(prefix="upstream-")
    os.makedirs(state, exist_ok=True)
    git_root = args.git_root or os.path.join(state, "git")
    os.makedirs(git_root, exist_ok=True)
    make_git_repo(git_root)
    Handler.git_root = git_root

    cert, key = args.cert, args.key
    if not cert and os.environ.get("UPSTREAM_CERT_PEM"):
        cert, key = os.path.join(state, "env-cert.pem"), os.path.join(state, "env-key.pem")
        with open(cert, "w") as f:
            f.write(os.environ["UPSTREAM_CERT_PEM"])
        with open(key, "w") as f:
            f.write(os.environ.get("UPSTREAM_KEY_PEM", ""))
    if not cert:
        cert, key = generate_cert(state, args.name or ["upstream.test", "localhost", "127.0.0.1"])

    threads = []
    if args.https_port:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["http/1.1"])
        https_handler = type("HttpsHandler", (Handler,), {"scheme": "https"})
        srv = QuietServer(("0.0.0.0", args.https_port), https_handler)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
        threads.append(threading.Thread(target=serve, args=(srv,), daemon=True))
        log({"event": "listening", "scheme": "https", "port": args.https_port})
    if args.http_port:
        http_handler = type("HttpHandler", (Handler,), {"scheme": "http"})
        srv = QuietServer(("0.0.0.0", args.http_port), http_handler)
        threads.append(threading.Thread(target=serve, args=(srv,), daemon=True))
        log({"event": "listening", "scheme": "http", "port": args.http_port})
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
