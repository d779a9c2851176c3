#!/usr/bin/env python3
"""The demo's webhook receiver: verifies each request's Standard Webhooks signature and
prints what arrived: the event version, the deprecation headers when there are any, and the
body. Event ids starting with "flaky-" get a 503 on their first attempt (the dispatcher
retries through the broker), ids starting with "bad-" get a 400 (dead-lettered).

Usage: demo-receiver.py PORT WHSEC_SECRET
"""
import base64
import hashlib
import hmac
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, SECRET = int(sys.argv[1]), sys.argv[2]
KEY = base64.b64decode(SECRET.removeprefix("whsec_"))
attempts = {}


def verified(msg_id, timestamp, body, header):
    """True when one of the space-separated v1 signatures matches and the timestamp is fresh."""
    if abs(time.time() - int(timestamp)) > 300:
        return False
    expected = base64.b64encode(
        hmac.new(KEY, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    ).decode()
    return any(
        hmac.compare_digest(sig.split(",", 1)[1], expected)
        for sig in header.split()
        if sig.startswith("v1,")
    )


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        msg_id = self.headers.get("webhook-id", "")
        ok = verified(msg_id, self.headers.get("webhook-timestamp", "0"), body,
                      self.headers.get("webhook-signature", ""))
        attempts[msg_id] = attempts.get(msg_id, 0) + 1
        n = attempts[msg_id]
        if not ok:
            code = 401
        elif msg_id.startswith("flaky-") and n == 1:
            code = 503
        elif msg_id.startswith("bad-"):
            code = 400
        else:
            code = 204
        mark = "signature verified" if ok else "BAD SIGNATURE"
        version = self.headers.get("event-version", "-")
        print(f"receiver: {msg_id} request {n} ({version}): {mark}, answered {code}, body {body.decode()}", flush=True)
        for name in ("Deprecation", "Sunset", "Link"):
            if self.headers.get(name):
                print(f"            {name}: {self.headers.get(name)}", flush=True)
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Hook).serve_forever()
