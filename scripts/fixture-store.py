#!/usr/bin/env python3
"""Writes a fixture store with a given `commandpost` binary: the store an earlier release leaves behind.

Usage: fixture-store.py BINARY OUT_DIR

Starts BINARY on a fresh data directory, plays a short incident history over the HTTP API (three incidents from
the three built-in templates, a drill among them; tokens, roles, a handoff proposed and accepted, timeline entries,
an Alertmanager alert, a status update marked sent, lifecycle stages, one incident closed with an override), saves
every export of every incident as that release rendered it, stops the server (which checkpoints the write-ahead
log into the database file) and keeps:

    OUT_DIR/commandpost.db           the store
    OUT_DIR/admin-token              the store's admin token (a test store: it guards nothing)
    OUT_DIR/exports/<id>.<format>    markdown, html, json, postmortem of each incident, as that release made them

Run by scripts/make-fixture-store.sh, which builds the binary from a tagged commit. The tests open a copy with
today's server and compare (tests/tests/upgrades.rs).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request

FORMATS = ["markdown", "html", "json", "postmortem"]


def main() -> None:
    binary, out = sys.argv[1], sys.argv[2]
    work = tempfile.mkdtemp(prefix="commandpost-fixture-")
    data = os.path.join(work, "data")
    server = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        base, admin = started(server)
        api = Api(base)
        play(api, admin)
        os.makedirs(os.path.join(out, "exports"), exist_ok=True)
        for incident in api.call("GET", "/api/incidents", admin)["incidents"]:
            for fmt in FORMATS:
                body = api.raw("GET", f"/api/incidents/{incident['id']}/export?format={fmt}", admin)
                with open(os.path.join(out, "exports", f"{incident['id']}.{fmt}"), "wb") as f:
                    f.write(body)
    finally:
        server.send_signal(signal.SIGTERM)
        if server.wait(timeout=60) != 0:
            sys.exit(f"the server exited with {server.returncode}")
    for leftover in ("commandpost.db-wal", "commandpost.db-shm"):
        if os.path.exists(os.path.join(data, leftover)) and os.path.getsize(os.path.join(data, leftover)) > 0:
            sys.exit(f"{leftover} was left with content: the store is not whole in commandpost.db")
    shutil.copyfile(os.path.join(data, "commandpost.db"), os.path.join(out, "commandpost.db"))
    with open(os.path.join(out, "admin-token"), "w") as f:
        f.write(admin + "\n")
    shutil.rmtree(work)


def started(server: subprocess.Popen) -> tuple:
    """The address and first-run admin token the server prints on stdout."""
    base = token = None
    for line in server.stdout:
        if "listening on " in line:
            base = line.split("listening on ", 1)[1].strip()
        elif "#token=" in line:
            token = line.split("#token=", 1)[1].strip()
            return base, token
    sys.exit("the server stopped before printing its address and admin token")


class Api:
    def __init__(self, base: str) -> None:
        self.base = base

    def raw(self, method: str, path: str, token: str, body=None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request) as response:
                return response.read()
        except urllib.error.HTTPError as e:
            sys.exit(f"{method} {path}: {e.code} {e.read().decode(errors='replace')}")

    def call(self, method: str, path: str, token: str, body=None):
        answer = self.raw(method, path, token, body)
        return json.loads(answer) if answer else None


def play(api: Api, admin: str) -> None:
    """A short incident history touching every kind of record the store keeps."""
    alice = api.call("POST", "/api/tokens", admin, {"name": "alice", "scope": "write"})["token"]
    bob = api.call("POST", "/api/tokens", admin, {"name": "bob", "scope": "write"})["token"]
    api.call("POST", "/api/tokens", admin, {"name": "viewer", "scope": "read"})
    api.call("DELETE", "/api/tokens/viewer", admin)

    checkout = api.call(
        "POST",
        "/api/incidents",
        alice,
        {"title": "Checkout errors in eu-west-1", "severity": "SEV2", "summary": "Checkout fails for 5% of carts."},
    )["id"]
    ops = f"/api/incidents/{checkout}/operations"
    api.call("POST", ops, alice, {"operations": [
        {"op": "setText", "field": "detailedStatus", "text": "Rolling back release 2026.12.1."},
        {"op": "setStatus", "status": "active"},
        {"op": "assignRole", "role": "operations", "person": "bob"},
    ]})
    api.call("POST", f"/api/incidents/{checkout}/timeline", bob, {"text": "Rollback started."})
    api.call("POST", "/api/hooks/alertmanager", alice, {
        "version": "4", "status": "firing", "receiver": "commandpost", "groupKey": "{}", "groupLabels": {},
        "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager",
        "alerts": [{
            "status": "firing", "labels": {"alertname": "CheckoutErrorRate", "incident": checkout},
            "annotations": {"summary": "Checkout error rate above 5%"},
            "startsAt": "2026-12-01T04:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph", "fingerprint": "c0ffee01",
        }],
    })
    api.call("POST", f"/api/incidents/{checkout}/handoffs", alice, {"role": "commander", "to": "bob"})
    api.call("POST", f"/api/incidents/{checkout}/handoffs/accept", bob, {"role": "commander"})
    api.call("POST", f"/api/incidents/{checkout}/update/sent", bob, {"note": "Sent to the status list."})
    api.call("POST", ops, bob, {"operations": [{"op": "setStatus", "status": "mitigated"}]})

    breach = api.call("POST", "/api/incidents", alice, {"title": "Leaked API key", "template": "security"})["id"]
    api.call("POST", f"/api/incidents/{breach}/timeline", alice, {"text": "Key revoked."})

    drill = api.call("POST", "/api/incidents", bob, {"title": "Quarterly failover drill", "template": "drill"})["id"]
    api.call("POST", f"/api/incidents/{drill}/timeline", bob, {"text": "Primary stopped."})
    api.call("POST", f"/api/incidents/{drill}/operations", bob, {"operations": [
        {"op": "setStatus", "status": "closed", "overrideReason": "Drill over; criteria reviewed in the debrief."},
    ]})


if __name__ == "__main__":
    main()
