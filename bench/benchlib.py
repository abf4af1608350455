"""What the bench scripts share: subprocess and git helpers, loopback ports, percentiles, and
signed GitHub push deliveries over plain http.client. Only 127.0.0.1 is ever contacted."""

import hashlib
import hmac
import http.client
import json
import os
import socket
import subprocess
import time
import uuid

ZERO = "0" * 40

GIT_ENV = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@localhost",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@localhost",
               GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")
GIT_ENV.pop("GIT_DIR", None)

class BenchError(Exception):
    pass


def run(cmd, **kw):
    kw.setdefault("env", GIT_ENV)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if r.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return r.stdout


def git(*args, cwd=None):
    return run(["git", *args], cwd=cwd)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, -(-len(xs) * p // 100) - 1))  # nearest rank
    return xs[int(k)]


def sign(secret, body):
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def push_payload(full_name, clone_url, ref, before, after, message):
    return json.dumps({
        "ref": ref, "before": before, "after": after,
        "created": before == ZERO, "deleted": False, "forced": False,
        "repository": {"full_name": full_name, "clone_url": clone_url},
        "pusher": {"name": "bench"},
        "head_commit": {"message": message},
        "commits": [],
    }, separators=(",", ":")).encode()


def deliver(port, path, secret, body, event="push", timeout=30):
    """POST a signed GitHub delivery (headers as GitHub sends them); returns (status, body)."""
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "424242",
        "X-Hub-Signature-256": sign(secret, body),
        "User-Agent": "GitHub-Hookshot/bench",
    }
    return http_request(port, "POST", path, body, headers, timeout=timeout)


def http_request(port, method, path, body=None, headers=None, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def tail(path, n=15):
    try:
        with open(path, "rb") as f:
            return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"
