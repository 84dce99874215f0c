"""An example `exec:` target: the reference served over the protocol (PROTOCOL.md).

    vfiospec replay conformance/traces --target "exec:python3 -m vfiospec.conformance.examples.reference_server"

It shows the protocol end to end; a VMM's or vfio-user server's own target has
the same shape with its implementation behind `perform`."""

from __future__ import annotations

import json
import sys

from vfiospec.conformance.targets.base import TargetError, Unsupported
from vfiospec.conformance.targets.reference import ReferenceSession
from vfiospec.reference import uapi


def serve(inp=sys.stdin, out=sys.stdout) -> int:
    session = None

    def send(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    for line in inp:
        line = line.strip()
        if not line:
            continue
        try:
            msg = json.loads(line)
        except json.JSONDecodeError as e:
            send({"error": f"bad JSON: {e}"})
            continue
        t = msg.get("type")
        if t == "hello":
            send({"type": "hello", "protocol": 1, "target": "vfiospec reference (example server)",
                  "platform": None,
                  "calls": ["open", "close", "ioctl", "mmap", "munmap", "read", "write", "kapi"],
                  "ioctls": sorted(uapi.IOCTLS)})
        elif t == "begin":
            if session is not None:
                session.close()
            try:
                session = ReferenceSession(msg.get("platform") or {})
            except ValueError as e:
                send({"unsupported": f"platform: {e}"})
                continue
            send({"ok": True})
        elif t == "step":
            if session is None:
                send({"error": "step before begin"})
                continue
            try:
                obs = session.perform(msg["step"])
            except Unsupported as e:
                send({"unsupported": str(e)})
                continue
            except (TargetError, KeyError, ValueError) as e:
                send({"error": f"{type(e).__name__}: {e}"})
                continue
            send({"ret": obs.ret, "errno": obs.errno, "out": obs.out, "data": obs.data, "reqs": obs.reqs})
        elif t == "end":
            if session is not None:
                session.close()
                session = None
            send({"ok": True})
        else:
            send({"error": f"unknown message type {t!r}"})
    return 0


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description="Serve the reference over the vfiospec target protocol.")
    ap.add_argument("--mutant", help="apply this seeded bug from the mutant catalog first")
    a = ap.parse_args(argv)
    if a.mutant:
        from vfiospec.conformance.mutants import CATALOG
        CATALOG[a.mutant].apply()
    return serve()


if __name__ == "__main__":
    sys.exit(main())
