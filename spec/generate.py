"""Spec -> implementation: TLC simulation (``-simulate -depth``) of a model,
each random behaviour turned into a trace-format v1 document whose steps carry
the expectation the spec gives (errno name or "ok", and outputs).

A wrapper module adds a step counter ``genStep`` and the invariant
``genStep < D``: TLC stops the behaviour when it reaches D steps and prints it
as a counterexample, which we parse.  Each trace is one TLC run with its own
``-seed``.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import tlc
from .tlavalue import parse_value
from .traces import CONCRETIZERS, base_model


def _generators() -> dict[str, str]:
    """model -> module of every shipped model that maps to uAPI steps (variants such as
    type1_guest included, deliberately broken ones not)."""
    out = {}
    for m in tlc.list_models():
        man = tlc.load_manifest(m)
        if base_model(m) in CONCRETIZERS and not man.get("broken"):
            out[m] = man["module"]
    return out


GENERATORS = _generators()
DEFAULT_MODELS = sorted(m for m in GENERATORS if m == base_model(m))   # without --model: not the variants


def read_constants(cfg_text: str) -> dict:
    """CONSTANTS of a TLC configuration file as Python values."""
    consts, on = {}, False
    for line in cfg_text.splitlines():
        line = line.split("\\*")[0].rstrip()
        if not line.strip():
            continue
        if re.match(r"^[A-Z]+\b", line) and not line.startswith(" "):
            on = line.startswith("CONSTANT")
            rest = line.split(None, 1)[1] if on and len(line.split(None, 1)) > 1 else ""
            if not rest:
                continue
            line = rest
        if on and "=" in line:
            name, _, val = line.partition("=")
            consts[name.strip()] = parse_value(val.strip())
    return consts


def wrapper_module(module: str, depth: int, max_errors: int | None = 1) -> tuple[str, str]:
    """The generator's module: a step counter, and (max_errors) a bound on calls
    failing in a row, so that random walks also reach the states behind successes
    instead of drowning in the many error cases."""
    name = f"Gen{module}"
    bound = f"/\\ genErrs' <= {max_errors}" if max_errors is not None else ""
    text = f"""---- MODULE {name} ----
EXTENDS {module}
VARIABLES genStep, genErrs
GenInit == Init /\\ genStep = 0 /\\ genErrs = 0
GenNext == /\\ Next
           /\\ genStep' = genStep + 1
           /\\ genErrs' = IF lastResult' = "ok" THEN 0 ELSE genErrs + 1
           {bound}
GenDone == genStep < {depth}
====
"""
    return name, text


def gen_cfg(model_cfg: str) -> str:
    """The model's CONSTANTS with the generator's INIT/NEXT/INVARIANT (no VIEW)."""
    keep, on = [], False
    for line in model_cfg.splitlines():
        if re.match(r"^[A-Z]+\b", line):
            on = line.startswith("CONSTANT")
        if on:
            keep.append(line)
    return "\n".join(keep) + "\nINIT GenInit\nNEXT GenNext\nINVARIANT GenDone\n"


def simulate(model: str, depth: int, seed: int, max_errors: int | None = 1, timeout: float = 300):
    """One behaviour of `depth` steps: (states, constants)."""
    man = tlc.load_manifest(model)
    cfg_text = (tlc.MODELS_DIR / model / man["config"]).read_text()
    wname, wtext = wrapper_module(man["module"], depth, max_errors)
    res = tlc.run_tlc(wname, gen_cfg(cfg_text), extra_modules={f"{wname}.tla": wtext},
                      args=["-simulate", "-depth", str(depth + 2), "-seed", str(seed)], timeout=timeout)
    if res.violated != "GenDone":
        raise RuntimeError(f"TLC simulation of {model} gave no behaviour: {res.summary()} {res.errors[:2]}")
    states = [s for _, s in res.trace]
    for s in states:
        s.pop("genStep", None)
        s.pop("genErrs", None)
    return states, read_constants(cfg_text)


def behaviour_to_trace(model: str, states: list[dict], consts: dict, name: str, seed: int, depth: int) -> dict:
    conc = CONCRETIZERS[base_model(model)](consts)
    steps = conc.build(states)
    desc = (f"TLC simulation of spec/models/{model} (seed {seed}, {depth} abstract steps); "
            f"expectations are the spec's.")
    if conc.note:
        desc += " " + conc.note
    if conc.dropped:
        desc += f" Left out {len(conc.dropped)} step(s) the spec does not pin down: " + "; ".join(sorted(set(conc.dropped)))
    return {"vfiospec": 1, "name": name, "description": desc, "requirements": conc.reqs,
            "source": "generated", "platform": conc.platform(), "steps": steps}


def generate(out: str, n: int = 10, depth: int = 12, seed: int = 1, models=None, jobs: int = 2, log=print,
             max_errors: int | None = 1) -> list[Path]:
    """Write `n` traces (round robin over `models`) into directory `out`."""
    models = models or DEFAULT_MODELS
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    plan = [(models[k % len(models)], seed + k) for k in range(n)]

    def one(item):
        model, s = item
        states, consts = simulate(model, depth, s, max_errors)
        name = f"gen-{model}-s{s}-d{depth}"
        doc = behaviour_to_trace(model, states, consts, name, s, depth)
        path = outdir / f"{name}.json"
        path.write_text(json.dumps(doc, indent=1) + "\n")
        log(f"  {path} ({len(doc['steps'])} steps)")
        return path

    with ThreadPoolExecutor(max_workers=jobs) as ex:
        return list(ex.map(one, plan))
