"""JUnit XML: one testcase per trace, written atomically."""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET


def junit_xml(results, suite_name: str = "vfiospec") -> bytes:
    suite = ET.Element("testsuite", name=suite_name, tests=str(len(results)),
                       failures=str(sum(r.verdict == "FAIL" for r in results)),
                       errors=str(sum(r.verdict == "ERROR" for r in results)),
                       skipped=str(sum(r.verdict == "UNSUPPORTED" for r in results)),
                       time=f"{sum(r.seconds for r in results):.6f}")
    for r in results:
        tc = ET.SubElement(suite, "testcase", classname=f"vfiospec.{r.target}", name=r.trace.name,
                           file=r.trace.path, time=f"{r.seconds:.6f}")
        if r.verdict in ("FAIL", "ERROR"):
            lines = [r.error] if r.error else []
            for s in r.failed:
                lines.append(f"step {s.index}: {s.call_text()}\n  expected: {_exp(s)}\n  observed: "
                             f"{s.observed.brief()}\n  {s.reason}")
            el = ET.SubElement(tc, "failure" if r.verdict == "FAIL" else "error",
                               message=f"{len(r.failed)} step(s) {r.verdict.lower()}")
            el.text = "\n".join(lines)
        elif r.verdict == "UNSUPPORTED":
            why = r.error or "; ".join(f"step {s.index}: {s.reason}" for s in r.steps if s.verdict == "UNSUPPORTED")
            ET.SubElement(tc, "skipped", message=f"UNSUPPORTED: {why}"[:500])
        if r.trace.requirements:
            props = ET.SubElement(tc, "properties")
            for req in r.trace.requirements:
                ET.SubElement(props, "property", name="requirement", value=req)
    return ET.tostring(suite, encoding="utf-8", xml_declaration=True)


def _exp(s):
    from .judge import describe
    return describe(s.expected)


def write_atomic(path, data: bytes | str) -> None:
    """Write `data` to `path` so that a reader never sees a partial file."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
