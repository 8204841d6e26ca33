#!/usr/bin/env python3
"""Loom's REST API from Python's standard library alone (docs/REST.md).

Registers a function, submits tasks one by one and long-polls each result, submits a batch and
streams its results as they finish, and prints everything. Exits non-zero if a result is wrong.

    python3 rest_client.py --url http://127.0.0.1:8080 --endpoint local [--token TOKEN] [--cafile CA.pem]

The token defaults to $LOOM_TOKEN, else the first line of the file $LOOM_TOKEN_FILE names (as
`loom-local` and `tools/quickstart.sh up` set it). For HTTPS with a self-signed certificate,
pass it as --cafile.
"""
import argparse
import base64
import json
import os
import ssl
import sys
import urllib.error
import urllib.request

TERMINAL = {"TASK_STATE_SUCCESS", "TASK_STATE_FAILED", "TASK_STATE_CANCELLED"}


class LoomError(Exception):
    """An error answer: the HTTP status and the body's code and message."""

    def __init__(self, status, code, message):
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class Loom:
    def __init__(self, url, token=None, cafile=None):
        self.url = url.rstrip("/")
        self.token = token
        self.context = ssl.create_default_context(cafile=cafile) if cafile else None

    def _open(self, method, path, body, timeout):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", "Bearer " + self.token)
        try:
            return urllib.request.urlopen(req, timeout=timeout, context=self.context)
        except urllib.error.HTTPError as e:
            try:
                err = json.load(e)
            except ValueError:
                err = {"code": "UNKNOWN", "message": e.reason}
            raise LoomError(e.code, err.get("code"), err.get("message")) from None

    def call(self, method, path, body=None, timeout=90):
        with self._open(method, path, body, timeout) as resp:
            return json.load(resp)

    def stream(self, path, body, timeout=90):
        """Yields each record of a newline-delimited JSON stream; raises on a failed end."""
        with self._open("POST", path, body, timeout) as resp:
            for line in resp:
                if not line.strip():
                    continue  # a keep-alive
                obj = json.loads(line)
                if "status" in obj:  # the last line says how the stream ended
                    if obj["status"]["code"] != "OK":
                        raise LoomError(200, obj["status"]["code"], obj["status"]["message"])
                    return
                yield obj


def to_value(x):
    """A Python value as a loom.v1.Value in proto JSON (one field set: a oneof)."""
    if x is None:
        return {"null_value": True}
    if isinstance(x, bool):
        return {"bool_value": x}
    if isinstance(x, int):
        return {"int_value": str(x)}  # int64 travels as a string
    if isinstance(x, float):
        return {"double_value": x}
    if isinstance(x, str):
        return {"string_value": x}
    if isinstance(x, bytes):
        return {"bytes_value": base64.b64encode(x).decode()}
    if isinstance(x, (list, tuple)):
        return {"list_value": {"items": [to_value(v) for v in x]}}
    if isinstance(x, dict):
        return {"map_value": {"entries": {k: to_value(v) for k, v in x.items()}}}
    raise TypeError(f"no Loom value for {type(x).__name__}")


def from_value(v):
    """A loom.v1.Value in proto JSON as a Python value (tensors stay as they are)."""
    if not v or "null_value" in v:
        return None
    kind, x = next(iter(v.items()))
    if kind == "int_value":
        return int(x)
    if kind == "bytes_value":
        return base64.b64decode(x)
    if kind == "list_value":
        return [from_value(i) for i in x.get("items", [])]
    if kind == "map_value":
        return {k: from_value(i) for k, i in x.get("entries", {}).items()}
    return x


def wait_for(loom, task_id):
    """Long-polls one task until it is terminal (each poll waits up to 30 s)."""
    while True:
        rec = loom.call("GET", f"/v1/tasks/{task_id}?wait_ms=30000")
        if rec["state"] in TERMINAL:
            return rec


def default_token():
    if os.environ.get("LOOM_TOKEN"):
        return os.environ["LOOM_TOKEN"]
    path = os.environ.get("LOOM_TOKEN_FILE")
    if path:
        with open(path) as f:
            return f.readline().strip()
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="the service's REST address, e.g. http://127.0.0.1:8080")
    ap.add_argument("--endpoint", required=True, help="the endpoint to run on, e.g. local")
    ap.add_argument("--token", default=default_token(), help="bearer token (default: $LOOM_TOKEN or $LOOM_TOKEN_FILE)")
    ap.add_argument("--cafile", help="CA certificate to trust for HTTPS")
    args = ap.parse_args()
    loom = Loom(args.url, args.token, args.cafile)
    wrong = 0

    print("service:", loom.call("GET", "/v1/health")["status"])
    reg = loom.call("POST", "/v1/functions", {"function": {"name": "add", "kernel": "add@1"}})
    print("function add ->", reg["function"]["kernel"], "(registered)" if reg["created"] else "(already there)")
    loom.call("POST", "/v1/functions", {"function": {"name": "echo", "kernel": "echo@1"}})

    # One task at a time: submit, then long-poll for its result.
    for i in range(1, 6):
        sub = loom.call("POST", "/v1/tasks", {"function": "add", "endpoint": args.endpoint,
                                              "args": [to_value(i), to_value(i * i)]})
        rec = wait_for(loom, sub["task_id"])
        result = from_value(rec.get("result"))
        print(f"add({i}, {i * i}) = {result}   [{rec['state']}, task {sub['task_id']}]")
        if rec["state"] != "TASK_STATE_SUCCESS" or result != i + i * i:
            print("  expected", i + i * i, rec.get("error", ""), file=sys.stderr)
            wrong += 1

    # A batch, with its results streamed as each finishes.
    values = ["text", 2.5, [1, "two", None], {"k": True}, b"\x00\x01"]
    batch = loom.call("POST", "/v1/tasks:batch", {"tasks": [
        {"function": "echo", "endpoint": args.endpoint, "args": [to_value(v)]} for v in values]})
    sent = dict(zip(batch["task_ids"], values))
    for rec in loom.stream("/v1/tasks:wait", {"task_ids": batch["task_ids"], "timeout_ms": "60000"}):
        result = from_value(rec.get("result"))
        print(f"echo({sent[rec['id']]!r}) = {result!r}   [{rec['state']}]")
        if result != sent.pop(rec["id"]):
            wrong += 1
    if sent:
        print("no result for", list(sent), file=sys.stderr)
        wrong += len(sent)

    # An error answer carries a code and a message.
    try:
        loom.call("GET", "/v1/functions/no-such-function")
    except LoomError as e:
        print(f"as expected: HTTP {e.status} {e.code}: {e.message}")

    print("all results correct" if wrong == 0 else f"{wrong} wrong result(s)")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
