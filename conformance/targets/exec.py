"""`exec:COMMAND`: any program speaking PROTOCOL.md on stdin/stdout.

A step that hangs past the step timeout, a crash, a closed pipe or a line that is
not a response gives ERROR for that step; the program is killed and the next trace
starts a fresh instance.  The rest of the broken trace is not sent (its state is
gone) and is reported ERROR."""

from __future__ import annotations

import json
import os
import queue
import shlex
import subprocess
import threading
import time

from vfiospec.conformance.judge import Observed

from .base import Session, Target, TargetError, Unsupported

PROTOCOL = 1
DEFAULT_STEP_TIMEOUT = float(os.environ.get("VFIOSPEC_STEP_TIMEOUT", "30"))
DEFAULT_START_TIMEOUT = float(os.environ.get("VFIOSPEC_START_TIMEOUT", "120"))


class _Proc:
    """One running instance of the target program."""

    def __init__(self, argv: list[str], start_timeout: float, stderr_log):
        self.argv = argv
        try:
            self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=stderr_log or subprocess.DEVNULL, text=True, bufsize=1)
        except OSError as e:
            raise TargetError(f"cannot start {shlex.join(argv)}: {e.strerror}") from None
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.hello = self.request({"type": "hello", "protocol": PROTOCOL}, start_timeout, "handshake")
        if self.hello.get("type") != "hello" or self.hello.get("protocol") != PROTOCOL:
            self.kill()
            raise TargetError(f"bad handshake from {shlex.join(argv)}: {self.hello!r} "
                              f"(expected {{\"type\": \"hello\", \"protocol\": {PROTOCOL}, ...}})")

    def _read(self) -> None:
        for line in self.p.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def request(self, msg: dict, timeout: float, what: str) -> dict:
        try:
            self.p.stdin.write(json.dumps(msg) + "\n")
            self.p.stdin.flush()
        except (BrokenPipeError, OSError):
            self.kill()
            raise TargetError(f"{what}: the target closed its input (exit status {self.p.poll()})") from None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.001))
            except queue.Empty:
                self.kill()
                raise TargetError(f"{what}: no answer within {timeout:g} s (target killed)") from None
            if line is None:
                rc = self.p.wait()
                raise TargetError(f"{what}: the target exited (status {rc}) without answering")
            line = line.strip()
            if not line:
                continue
            try:
                resp = json.loads(line)
            except json.JSONDecodeError:
                self.kill()
                raise TargetError(f"{what}: the target answered a line that is not JSON: {line[:200]!r}") from None
            if not isinstance(resp, dict):
                self.kill()
                raise TargetError(f"{what}: the target answered {line[:200]!r}, not a JSON object")
            return resp

    def alive(self) -> bool:
        return self.p.poll() is None

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def close(self) -> None:
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()


class ExecSession(Session):
    def __init__(self, target: "ExecTarget", proc: _Proc):
        self.t = target
        self.proc = proc
        self.broken: str | None = None

    def perform(self, step: dict) -> Observed:
        if self.broken:
            raise TargetError(f"not run: {self.broken}")
        calls = self.proc.hello.get("calls")
        if calls is not None and step["call"] not in calls:
            raise Unsupported(f"the target does not perform {step['call']!r} calls")
        ioctls = self.proc.hello.get("ioctls")
        if step["call"] == "ioctl" and ioctls is not None and step["cmd"] not in ioctls:
            raise Unsupported(f"the target does not perform {step['cmd']}")
        self.t.index += 1
        try:
            r = self.proc.request({"type": "step", "index": self.t.index, "step": step}, self.t.step_timeout,
                                  f"step {step['call']}")
        except TargetError as e:
            self.broken = f"the target broke earlier in this trace ({e})"
            self.t.proc = None
            raise
        return parse_response(r)

    def close(self) -> None:
        if self.broken or not self.proc.alive():
            return
        try:
            self.proc.request({"type": "end"}, self.t.step_timeout, "end")
        except TargetError:
            self.t.proc = None


def parse_response(r: dict) -> Observed:
    """A step response of the protocol as an Observed."""
    if "unsupported" in r:
        raise Unsupported(str(r["unsupported"]))
    if "error" in r:
        raise TargetError(f"the target reported an error: {r['error']}")
    if "ret" not in r and "errno" not in r:
        raise TargetError(f"a step response needs ret or errno, got {json.dumps(r)[:200]}")
    errno = r.get("errno")
    if errno is not None and not isinstance(errno, str):
        raise TargetError(f"errno must be an errno name or null, got {errno!r}")
    out = r.get("out") or {}
    if not isinstance(out, dict):
        raise TargetError(f"out must be an object, got {out!r}")
    return Observed(ret=r.get("ret", -1 if errno else 0), errno=errno, out=out, data=r.get("data"),
                    reqs=list(r.get("reqs", [])))


class ExecTarget(Target):
    def __init__(self, command: str, step_timeout: float = DEFAULT_STEP_TIMEOUT,
                 start_timeout: float = DEFAULT_START_TIMEOUT, stderr_log=None):
        self.command = command
        self.argv = shlex.split(command)
        if not self.argv:
            raise TargetError("exec: needs a command, as in exec:'python3 my_target.py'")
        self.name = f"exec:{command}"
        self.step_timeout = step_timeout
        self.start_timeout = start_timeout
        self.stderr_log = stderr_log
        self.proc: _Proc | None = None
        self.index = 0
        self.starts = 0

    @property
    def restarts(self) -> int:
        """Fresh instances started after a broken one."""
        return max(self.starts - 1, 0)

    def _ensure(self) -> _Proc:
        if self.proc is None or not self.proc.alive():
            if self.proc is not None:
                self.proc.kill()
            self.proc = _Proc(self.argv, self.start_timeout, self.stderr_log)
            self.starts += 1
            self.platform = self.proc.hello.get("platform")
        return self.proc

    def describe(self) -> dict:
        p = self._ensure()
        return {"target": self.name, **{k: v for k, v in p.hello.items() if k != "type"}}

    def begin(self, trace) -> ExecSession:
        proc = self._ensure()
        try:
            r = proc.request({"type": "begin", "trace": trace.name, "platform": trace.platform},
                             self.step_timeout, "begin")
        except TargetError:
            self.proc = None
            raise
        if "unsupported" in r:
            raise Unsupported(str(r["unsupported"]))
        if not r.get("ok"):
            raise TargetError(f"begin: expected {{\"ok\": true}}, got {json.dumps(r)[:200]}")
        return ExecSession(self, proc)

    def shutdown(self) -> None:
        if self.proc is not None:
            self.proc.close()
            self.proc = None
