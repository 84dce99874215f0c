"""TLC's distributed mode: one ``tlc2.tool.distributed.TLCServer`` holding the
state queue and fingerprint set, and ``TLCWorker`` processes (on this machine or
others) that compute successor states over Java RMI.  See spec/README.md.

``run_distributed`` runs the server and N workers on 127.0.0.1 (the smoke test
and a recipe for real clusters: start the workers on other hosts with
``python -m vfiospec.spec.distributed worker SERVER_HOST``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import tlc


def _java_cmd(cls: str, args: list[str], host: str, tmp: Path) -> list[str]:
    return [tlc.find_java(), f"-Djava.rmi.server.hostname={host}", f"-Djava.io.tmpdir={tmp}",
            "-cp", tlc.find_jar(), cls, *args]


def worker_cmd(server_host: str, tmp: str = "/tmp") -> list[str]:
    return _java_cmd("tlc2.tool.distributed.TLCWorker", [server_host], server_host, Path(tmp))


def run_distributed(model: str, workers: int = 2, host: str = "127.0.0.1", timeout: float = 600) -> dict:
    """Check a shipped model with a TLCServer and `workers` TLCWorker processes."""
    man = tlc.load_manifest(model)
    work = Path(tempfile.mkdtemp(prefix=f"vfiospec-dist-{model}-"))
    for f in tlc.TLA_DIR.glob("*.tla"):
        shutil.copy(f, work)
    shutil.copy(tlc.MODELS_DIR / model / man["config"], work / f"{man['module']}.cfg")
    (work / "jtmp").mkdir()
    t0 = time.monotonic()
    server = subprocess.Popen(
        _java_cmd("tlc2.tool.distributed.TLCServer",
                  ["-metadir", str(work / "states"), "-config", f"{man['module']}.cfg", f"{man['module']}.tla"],
                  host, work / "jtmp"),
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out: list[str] = []
    procs = []
    try:
        for line in server.stdout:
            out.append(line)
            if "is ready" in line:
                break
        for k in range(workers):
            wt = work / f"w{k}"
            wt.mkdir()
            procs.append(subprocess.Popen(_java_cmd("tlc2.tool.distributed.TLCWorker", [host], host, wt),
                                          cwd=wt, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        deadline = time.monotonic() + timeout
        for line in server.stdout:
            out.append(line)
            if time.monotonic() > deadline:
                break
        server.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        for p in [server, *procs]:
            if p.poll() is None:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(work, ignore_errors=True)
    text = "".join(out)
    res = {"model": model, "workers": workers, "seconds": time.monotonic() - t0, "output": text,
           "registered": len(re.findall(r"Registration for worker", text)),
           "ok": "No error has been found" in text}
    m = re.search(r"([\d,]+) states generated, ([\d,]+) distinct states found", text)
    if m:
        res["generated"], res["distinct"] = (int(x.replace(",", "")) for x in m.groups())
    m = re.search(r"depth of the complete state graph search is (\d+)", text)
    if m:
        res["depth"] = int(m.group(1))
    return res


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"] and len(sys.argv) == 3:
        sys.exit(subprocess.call(worker_cmd(sys.argv[2])))
    if sys.argv[1:2] == ["check"] and len(sys.argv) >= 3:
        r = run_distributed(sys.argv[2], workers=int(sys.argv[3]) if len(sys.argv) > 3 else 2)
        print({k: v for k, v in r.items() if k != "output"})
        sys.exit(0 if r["ok"] else 1)
    print("usage: python -m vfiospec.spec.distributed check MODEL [N] | worker SERVER_HOST", file=sys.stderr)
    sys.exit(2)
