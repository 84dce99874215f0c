"""Reports of a conformance run, written incrementally and atomically into a
directory so that an interrupted run keeps what it found:

    report.json    for machines (the whole run, with the statement of what was run)
    junit.xml      for CI (one testcase per trace and per stateful mode)
    report.html    for people: per requirement, per mode, counterexamples step by step, coverage
    summary.md     for CI step summaries
"""

from __future__ import annotations

import html
import json
import platform as _host
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

from vfiospec import __version__

from .junit import write_atomic

ORDER = ("ERROR", "FAIL", "UNSUPPORTED", "XFAIL", "PASS")


class Report:
    def __init__(self, out_dir, statement: dict):
        self.dir = Path(out_dir) if out_dir else None
        self.statement = {"vfiospec": __version__, "python": sys.version.split()[0], "host": _host.node(),
                          "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **statement}
        self.traces: list[dict] = []
        self.stateful: list[dict] = []
        self.waivers: list = []
        self.interrupted = False

    # -------------------------------------------------------------- input
    def add_trace(self, tr_json: dict) -> None:
        self.traces.append(tr_json)
        self.write()

    def add_stateful(self, mode_json: dict) -> None:
        self.stateful.append(mode_json)
        self.write()

    # -------------------------------------------------------------- derived
    def verdicts(self) -> Counter:
        c = Counter(t["verdict"] for t in self.traces)
        for m in self.stateful:
            c[m["verdict"]] += 1
        return c

    def conformant(self) -> bool:
        v = self.verdicts()
        return not (v["FAIL"] or v["ERROR"])

    def requirements(self) -> dict:
        reqs: dict[str, dict] = defaultdict(lambda: {"verdict": "PASS", "traces": []})
        for t in self.traces:
            ids = set(t.get("requirements", []))
            for s in t["steps"]:
                ids |= set(s.get("requirements", []))
            for r in ids:
                e = reqs[r]
                e["traces"].append(t["name"])
                if ORDER.index(t["verdict"]) < ORDER.index(e["verdict"]):
                    e["verdict"] = t["verdict"]
        return dict(sorted(reqs.items()))

    def coverage(self) -> dict:
        calls: Counter = Counter()
        for t in self.traces:
            for s in t["steps"]:
                name = s["call"].split("(", 1)[0]
                if name == "ioctl":
                    name = s["call"].split(", ")[1].rstrip(")") if ", " in s["call"] else name
                calls[f"{name} -> {s['observed'].get('errno') or 'ok'}"] += 1
        for m in self.stateful:
            for k, v in m.get("coverage", {}).items():
                calls[k] += v
        return dict(sorted(calls.items()))

    def to_json(self) -> dict:
        v = self.verdicts()
        return {"statement": {**self.statement, "interrupted": self.interrupted,
                              "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                "summary": {"conformant": self.conformant(), **{k.lower(): v.get(k, 0) for k in ORDER}},
                "traces": self.traces, "stateful": self.stateful,
                "requirements": self.requirements(), "coverage": self.coverage(),
                "waivers": [{"id": w.id, "reason": w.reason, "link": w.link, "hits": w.hits,
                             "mismatches": w.mismatches, "stale": w.hits == 0 and w.mismatches == 0}
                            for w in self.waivers]}

    # -------------------------------------------------------------- output
    def write(self) -> None:
        if self.dir is None:
            return
        d = self.to_json()
        write_atomic(self.dir / "report.json", json.dumps(d, indent=1, default=str))
        write_atomic(self.dir / "junit.xml", self.junit(d))
        write_atomic(self.dir / "report.html", self.html(d))
        write_atomic(self.dir / "summary.md", self.markdown(d))

    def junit(self, d) -> bytes:
        suite = ET.Element("testsuite", name="vfiospec", tests=str(len(d["traces"]) + len(d["stateful"])),
                           failures=str(d["summary"]["fail"]), errors=str(d["summary"]["error"]),
                           skipped=str(d["summary"]["unsupported"] + d["summary"]["xfail"]))
        for t in d["traces"]:
            tc = ET.SubElement(suite, "testcase", classname="vfiospec.traces", name=t["name"],
                               time=str(t.get("seconds", 0)))
            _junit_verdict(tc, t["verdict"], t.get("error", ""), [s for s in t["steps"] if s["verdict"] != "PASS"])
        for m in d["stateful"]:
            tc = ET.SubElement(suite, "testcase", classname="vfiospec.stateful", name=m["mode"],
                               time=str(m.get("seconds", 0)))
            _junit_verdict(tc, m["verdict"], m.get("error", ""), [])
            for f in m.get("failures", []):
                el = tc.find("failure")
                if el is not None:
                    el.text = (el.text or "") + f"\n{f['message']}\nreplay: {f['replay']}"
        return ET.tostring(suite, encoding="utf-8", xml_declaration=True)

    def markdown(self, d) -> str:
        s = d["summary"]
        st = d["statement"]
        lines = [f"## vfiospec {st['vfiospec']}: {'conformant' if s['conformant'] else 'NOT conformant'}",
                 "", f"target `{st.get('target')}`, kernel {st.get('kernel', '?')}, "
                     f"seed {st.get('seed', '-')}, budget {st.get('budget', '-')} s"
                     + (" — **interrupted**" if st["interrupted"] else ""), "",
                 "| pass | fail | error | unsupported | xfail |", "|---|---|---|---|---|",
                 f"| {s['pass']} | {s['fail']} | {s['error']} | {s['unsupported']} | {s['xfail']} |", ""]
        bad = [t for t in d["traces"] if t["verdict"] in ("FAIL", "ERROR")]
        if bad:
            lines.append("### Failing traces")
            for t in bad[:50]:
                lines.append(f"- **{t['verdict']}** `{t['name']}`")
                for stp in t["steps"]:
                    if stp["verdict"] in ("FAIL", "ERROR"):
                        lines.append(f"  - step {stp['index']} `{stp['call']}`: expected {stp['expected']}, "
                                     f"observed {_obs(stp['observed'])}")
        for m in d["stateful"]:
            lines.append(f"- stateful `{m['mode']}`: {m['verdict']} ({m.get('steps', 0)} steps, "
                         f"{m.get('examples', 0)} examples)")
            for f in m.get("failures", []):
                lines.append(f"  - {f['message']} — replay: `{f['replay']}`")
        skipped = [t for t in d["traces"] if t["verdict"] == "UNSUPPORTED"]
        if skipped:
            lines.append(f"\n**{len(skipped)} traces UNSUPPORTED (not run on this target, not passes).**")
        stale = [w for w in d["waivers"] if w["stale"]]
        if stale:
            lines.append("\nStale waivers: " + ", ".join(w["id"] for w in stale))
        return "\n".join(lines) + "\n"

    def html(self, d) -> str:
        e = html.escape
        s = d["summary"]
        st = d["statement"]
        out = ["<!doctype html><html><head><meta charset='utf-8'><title>vfiospec report</title><style>",
               "body{font:14px sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
               "padding:2px 6px;text-align:left;vertical-align:top}.PASS{color:#070}.FAIL,.ERROR{color:#b00;"
               "font-weight:bold}.UNSUPPORTED{color:#a60;font-weight:bold}.XFAIL{color:#666}code{font-size:12px}",
               "</style></head><body>",
               f"<h1>vfiospec {e(str(st['vfiospec']))}: {'conformant' if s['conformant'] else 'NOT conformant'}</h1>",
               "<h2>What was run</h2><table>"]
        for k, v in st.items():
            out.append(f"<tr><th>{e(str(k))}</th><td>{e(json.dumps(v) if not isinstance(v, str) else v)}</td></tr>")
        out.append("</table><h2>Summary</h2><table><tr>" + "".join(f"<th>{k}</th>" for k in ORDER) + "</tr><tr>" +
                   "".join(f"<td class='{k}'>{s[k.lower()]}</td>" for k in ORDER) + "</tr></table>")
        if s["unsupported"]:
            out.append(f"<p class='UNSUPPORTED'>{s['unsupported']} item(s) UNSUPPORTED: not run on this target, "
                       "not counted as passes.</p>")
        out.append("<h2>Requirements</h2><table><tr><th>ID</th><th>verdict</th><th>traces</th></tr>")
        for rid, r in d["requirements"].items():
            out.append(f"<tr><td><code>{e(rid)}</code></td><td class='{r['verdict']}'>{r['verdict']}</td>"
                       f"<td>{e(', '.join(sorted(set(r['traces'])))[:400])}</td></tr>")
        out.append("</table><h2>Stateful exploration</h2><table><tr><th>mode</th><th>verdict</th><th>examples</th>"
                   "<th>steps</th><th>counterexamples</th></tr>")
        for m in d["stateful"]:
            fs = "".join(f"<div>{e(f['message'])}<br><code>{e(f['replay'])}</code><ol>" +
                         "".join(f"<li><code>{e(x)}</code></li>" for x in f.get("steps_text", [])) + "</ol></div>"
                         for f in m.get("failures", []))
            out.append(f"<tr><td>{e(m['mode'])}</td><td class='{m['verdict']}'>{m['verdict']}</td>"
                       f"<td>{m.get('examples', 0)}</td><td>{m.get('steps', 0)}</td><td>{fs}</td></tr>")
        out.append("</table><h2>Traces</h2>")
        for t in sorted(d["traces"], key=lambda t: (ORDER.index(t["verdict"]), t["name"])):
            out.append(f"<details{' open' if t['verdict'] in ('FAIL', 'ERROR') else ''}><summary class='{t['verdict']}'>"
                       f"{t['verdict']} {e(t['name'])}</summary>")
            if t.get("error"):
                out.append(f"<p>{e(t['error'])}</p>")
            out.append("<table><tr><th>#</th><th>call</th><th>expected</th><th>observed</th><th>verdict</th></tr>")
            for stp in t["steps"]:
                why = stp.get("reason", "") + (f" (waiver {stp['waiver']})" if stp.get("waiver") else "")
                out.append(f"<tr><td>{stp['index']}</td><td><code>{e(stp['call'])}</code></td>"
                           f"<td>{e(stp['expected'])}</td><td>{e(_obs(stp['observed']))}</td>"
                           f"<td class='{stp['verdict']}'>{stp['verdict']} {e(why)}</td></tr>")
            out.append("</table></details>")
        out.append("<h2>Coverage (call → result)</h2><table>")
        for k, v in d["coverage"].items():
            out.append(f"<tr><td><code>{e(k)}</code></td><td>{v}</td></tr>")
        out.append("</table><h2>Waivers</h2><table><tr><th>id</th><th>hits</th><th>mismatches</th><th>stale</th>"
                   "<th>reason</th></tr>")
        for w in d["waivers"]:
            out.append(f"<tr><td>{e(w['id'])}</td><td>{w['hits']}</td><td>{w['mismatches']}</td>"
                       f"<td>{w['stale']}</td><td>{e(w['reason'])} {e(w['link'])}</td></tr>")
        out.append("</table></body></html>")
        return "\n".join(out)


def _obs(o: dict) -> str:
    if o.get("unsupported") is not None:
        return f"UNSUPPORTED: {o['unsupported']}"
    if o.get("error") is not None:
        return f"ERROR: {o['error']}"
    return f"errno {o['errno']}" if o.get("errno") else f"ret {o.get('ret')}"


def _junit_verdict(tc, verdict, error, steps):
    text = "\n".join([error] + [f"step {s['index']}: {s['call']}: expected {s['expected']}, observed "
                                f"{_obs(s['observed'])}" for s in steps if s["verdict"] in ("FAIL", "ERROR")])
    if verdict == "FAIL":
        ET.SubElement(tc, "failure", message="non-conformant").text = text
    elif verdict == "ERROR":
        ET.SubElement(tc, "error", message="harness or target error").text = text
    elif verdict == "UNSUPPORTED":
        ET.SubElement(tc, "skipped", message="UNSUPPORTED: " + (error or "; ".join(
            s.get("reason", "") for s in steps if s["verdict"] == "UNSUPPORTED"))[:300])
    elif verdict == "XFAIL":
        ET.SubElement(tc, "skipped", message="XFAIL (waived divergence)")
