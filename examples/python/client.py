#!/usr/bin/env python3
"""A therasync client in Python (pyzmq; Debian: python3-zmq).

Creates a session, queries it back, watches its doc.changed event on the
PUB socket, and follows a live query (`subscribe`, then `query.changed`
notifications) while it changes the session. docs/PROTOCOL.md describes
every method; `rpc.discover` answers them in OpenRPC.

    python3 examples/python/client.py [ENDPOINT [EVENTS]]

ENDPOINT and EVENTS default to $THERASYNC_ENDPOINT / $THERASYNC_EVENTS,
else tcp://127.0.0.1:7410 and :7411 (`make run`). Needs the shipped
policies (the `upcoming` selector). Exits 0 when every step worked.
"""
import itertools
import json
import os
import sys
import time
import uuid

import zmq

TIMEOUT_MS = 5000


def read_key(path):
    """A key file of `therasync keygen`: `public KEY` and `secret KEY` lines
    (Z85); returns {"public": ..., "secret": ...} as bytes."""
    keys = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and parts[0] in ("public", "secret"):
                keys[parts[0]] = parts[1].encode()
    return keys


def use_keys(sock):
    """With THERASYNC_KEY (this client's key pair) and THERASYNC_SERVER_KEY
    (the daemon's public key), as the CLI takes them, sock is a CURVE
    client; without them it connects in the clear (a loopback daemon
    without client keys)."""
    mine, server = os.environ.get("THERASYNC_KEY"), os.environ.get("THERASYNC_SERVER_KEY")
    if not mine and not server:
        return
    own, theirs = read_key(mine), read_key(server)
    sock.curve_publickey = own["public"]
    sock.curve_secretkey = own["secret"]
    sock.curve_serverkey = theirs["public"]


class Client:
    """JSON-RPC 2.0 over a ZeroMQ DEALER: one frame out, one frame back.
    Notifications (no id, e.g. query.changed) arriving meanwhile are kept."""

    def __init__(self, ctx, endpoint):
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        # A printable routing id names this client in the audit trail.
        self.sock.setsockopt(zmq.ROUTING_ID, b"example-py-" + uuid.uuid4().hex[:8].encode())
        use_keys(self.sock)
        self.sock.connect(endpoint)
        self.ids = itertools.count(1)
        self.notifications = []

    def _recv(self, timeout_ms):
        if not self.sock.poll(timeout_ms):
            raise TimeoutError("no answer from the engine")
        return json.loads(self.sock.recv())

    def call(self, method, params=None):
        rid = next(self.ids)
        req = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            req["params"] = params
        self.sock.send(json.dumps(req).encode())
        while True:
            msg = self._recv(TIMEOUT_MS)
            if "id" not in msg:
                self.notifications.append(msg)
                continue
            if msg["id"] != rid:
                continue
            if "error" in msg:
                raise RuntimeError(f"{method}: {msg['error']}")
            return msg["result"]

    def notification(self, method, timeout_ms=TIMEOUT_MS):
        """The next notification named method on this connection."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            for i, n in enumerate(self.notifications):
                if n.get("method") == method:
                    return self.notifications.pop(i)
            left = int((deadline - time.monotonic()) * 1000)
            if left <= 0:
                raise TimeoutError(f"no {method} notification")
            msg = self._recv(left)
            if "id" not in msg:
                self.notifications.append(msg)


def next_event(sub, want_id, timeout_ms=TIMEOUT_MS):
    """The next event on the PUB socket about document want_id: (topic, params)."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        left = int((deadline - time.monotonic()) * 1000)
        if left <= 0 or not sub.poll(left):
            raise TimeoutError("no event")
        topic, payload = sub.recv_multipart()
        params = json.loads(payload)["params"]
        # seq counts the events of a topic; boot changes on restart. A jump
        # in seq is a lost event: read the state again (docs/PROTOCOL.md).
        if params.get("id") == want_id:
            return topic.decode(), params


def main():
    endpoint = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "THERASYNC_ENDPOINT", "tcp://127.0.0.1:7410")
    events = sys.argv[2] if len(sys.argv) > 2 else os.environ.get(
        "THERASYNC_EVENTS", "tcp://127.0.0.1:7411")
    ctx = zmq.Context()
    client = Client(ctx, endpoint)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"doc.sessions")
    use_keys(sub)
    sub.connect(events)

    print("ping:", client.call("ping"))
    time.sleep(0.3)  # a SUB socket hears only what is published after it joined

    therapist = "thr-" + uuid.uuid4().hex[:8]
    session = {"patient_id": "pat-0001", "therapist_id": therapist,
               "scheduled_at": "2030-03-02T09:00:00Z", "duration_min": 50,
               "status": "scheduled", "modality": "in_person", "room": "A1"}
    created = client.call("create", {"collection": "sessions", "doc": session})
    sid = created["doc"]["id"]
    print("create:", sid, "sync", created["sync"]["state"])

    topic, ev = next_event(sub, sid)
    print("event:", topic, ev["origin"], "seq", ev["seq"])

    found = client.call("query", {"collection": "sessions",
                                  "selector": {"where": {"therapist_id": therapist}}})
    assert [d["id"] for d in found["items"]] == [sid], found
    print("query:", len(found["items"]), "item")

    upcoming = {"therapist_id": therapist, "now": "2030-01-01T00:00:00Z"}
    live = client.call("subscribe", {"collection": "sessions", "selector": "upcoming",
                                     "params": upcoming})
    assert [d["id"] for d in live["items"]] == [sid], live
    print("subscribe:", live["sub"], "version", live["version"])

    # a second session of the same therapist, earlier: it joins the result
    session["scheduled_at"] = "2030-03-01T09:00:00Z"
    second = client.call("create", {"collection": "sessions", "doc": session})["doc"]["id"]
    changed = client.notification("query.changed")["params"]
    assert changed["sub"] == live["sub"], changed
    ops = [(op["op"], op["id"]) for op in changed["ops"]]
    assert ("add", second) in ops, changed
    print("query.changed:", ops)

    # cancelling the first takes it out of the upcoming sessions
    client.call("update", {"collection": "sessions", "id": sid,
                           "patch": {"status": "cancelled"}})
    changed = client.notification("query.changed")["params"]
    ops = [(op["op"], op["id"]) for op in changed["ops"]]
    assert ("remove", sid) in ops, changed
    print("query.changed:", ops)

    print("unsubscribe:", client.call("unsubscribe", {"sub": live["sub"]}))
    print("ok")
    ctx.destroy(linger=0)


if __name__ == "__main__":
    main()
