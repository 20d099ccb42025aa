"""A real webhook receiver for the actions service's tests and benchmark.

Every request's signature is checked with the `standardwebhooks` package (an implementation of
the Standard Webhooks spec independent of Cairn's) against each secret listed for its path in
DIR/secrets.json ({"/path": ["whsec_...", ...]}, re-read when it changes); the outcome for each
secret is recorded. What the receiver answers is set per path in DIR/modes.json, re-read when it
changes:

    {"/path": {"status": 500}}                       every request gets 500
    {"/path": {"status": 429, "retry_after": "2"}}   ... with a Retry-After header
    {"/path": {"status": 500, "first": 1}}           the first attempt of each webhook-id gets
                                                      500, later ones 200
    {"/path": {"status": 500, "every": 3}}           like "first", for every third webhook-id
    {"/path": {"delay_ms": 50}}                      answer 200 after 50 ms
    {"/path": {"status": 403, "message": "why"}}     ... with {"message": "why"} in the body

Every request is appended to DIR/requests.jsonl (path, webhook-id, timestamp, the signatures'
verification per secret, the body's type, aggregate, sequence and position, a request
condition's method and request, the status answered, the time received, and how many requests of
the same path and aggregate were still being answered when it arrived: "overlap") unless --quiet; DIR/ready is written once the server listens. Stops on SIGTERM.

    python receiver.py --port 8099 --dir /tmp/receiver [--quiet]
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class Files:
    """JSON files re-read when their modification time changes."""

    def __init__(self, directory):
        self.directory = directory
        self.cache = {}
        self.lock = threading.Lock()

    def get(self, name):
        path = os.path.join(self.directory, name)
        try:
            mtime = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            return {}
        with self.lock:
            cached = self.cache.get(name)
            if cached and cached[0] == mtime:
                return cached[1]
            with open(path, encoding="utf-8") as f:
                value = json.load(f)
            self.cache[name] = (mtime, value)
            return value


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    files = Files(args.dir)
    log_lock = threading.Lock()
    log = open(os.path.join(args.dir, "requests.jsonl"), "a", encoding="utf-8")
    seen = {}
    seen_lock = threading.Lock()
    # Requests being answered, by (path, aggregate): a second one arriving is an overlap.
    on_wire = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def do_POST(self):
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            webhook_id = headers.get("webhook-id", "")
            mode = files.get("modes.json").get(self.path, {})
            try:
                aggregate = (json.loads(body).get("data") or {}).get("aggregateId")
            except (ValueError, AttributeError):
                aggregate = None
            wire_key = (self.path, aggregate)
            with seen_lock:
                count = seen.get((self.path, webhook_id), 0) + 1
                seen[(self.path, webhook_id)] = count
                overlap = on_wire.get(wire_key, 0) if aggregate else 0
                on_wire[wire_key] = on_wire.get(wire_key, 0) + 1
            released = []

            def release():
                # Before the answer goes out: a caller sends the key's next request only after it.
                if not released:
                    released.append(True)
                    with seen_lock:
                        on_wire[wire_key] -= 1

            try:
                self.answer(body, headers, webhook_id, mode, count, overlap, release)
            finally:
                release()

        def answer(self, body, headers, webhook_id, mode, count, overlap, release):
            status = 200
            wanted = mode.get("status", 200)
            if "every" in mode:
                if zlib.crc32(webhook_id.encode()) % int(mode["every"]) == 0 and count <= int(mode.get("first", 1)):
                    status = wanted
            elif "first" in mode:
                if count <= int(mode["first"]):
                    status = wanted
            else:
                status = wanted
            if mode.get("delay_ms"):
                time.sleep(mode["delay_ms"] / 1000.0)
            if not args.quiet:
                verified = []
                for secret in files.get("secrets.json").get(self.path, []):
                    try:
                        Webhook(secret).verify(body, headers)
                        verified.append(True)
                    except WebhookVerificationError:
                        verified.append(False)
                try:
                    data = json.loads(body)
                except ValueError:
                    data = {}
                inner = data.get("data", {}) if isinstance(data, dict) else {}
                record = {
                    "path": self.path,
                    "id": webhook_id,
                    "timestamp": headers.get("webhook-timestamp"),
                    "signatures": len(headers.get("webhook-signature", "").split()),
                    "verified": verified,
                    "type": data.get("type") if isinstance(data, dict) else None,
                    "aggregateId": inner.get("aggregateId"),
                    "sequence": inner.get("sequence"),
                    "position": inner.get("position"),
                    "payload": inner.get("payload"),
                    "method": inner.get("method"),
                    "request": inner.get("request"),
                    "status": status,
                    "attempt": count,
                    "overlap": overlap,
                    "at": time.time(),
                }
                with log_lock:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
            answer = {"status": status}
            if mode.get("message") is not None:
                answer["message"] = mode["message"]
            answer = json.dumps(answer).encode()
            release()
            self.send_response(status)
            if mode.get("retry_after") is not None and status in (429, 503):
                self.send_header("Retry-After", str(mode["retry_after"]))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            try:
                self.end_headers()
                self.wfile.write(answer)
            except (BrokenPipeError, ConnectionResetError):
                # The caller gave up (its timeout): what it was answered no longer matters.
                pass

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    with open(os.path.join(args.dir, "ready"), "w", encoding="utf-8") as ready:
        ready.write(str(os.getpid()))
    try:
        server.serve_forever()
    finally:
        log.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
