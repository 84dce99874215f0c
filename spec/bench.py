"""TLC benchmark: states/s and total time for every shipped model with 1 and 2
TLC workers (``bench(workers=(1, 2))``; the lead wires it into ``vfiospec bench``).
Time includes the JVM start and SANY (a few seconds per run)."""

from __future__ import annotations

from . import tlc


def bench(workers=(1, 2), models=None, out=print) -> list[dict]:
    rows = []
    for model in models or tlc.list_models():
        man = tlc.load_manifest(model)
        if man.get("broken"):
            continue
        for w in workers:
            res, _ = tlc.check_model(model, workers=w)
            rate = (res.generated or 0) / res.seconds if res.seconds else 0.0
            row = {"model": model, "workers": w, "outcome": res.outcome, "distinct": res.distinct,
                   "generated": res.generated, "depth": res.depth, "seconds": round(res.seconds, 2),
                   "states_per_s": round(rate, 1), "matches_manifest": not tlc.compare_manifest(res, man)}
            rows.append(row)
            if out:
                out(f"{model:10s} workers={w}  {res.distinct or 0:>7} distinct  {res.generated or 0:>8} generated  "
                    f"depth {res.depth}  {res.seconds:6.1f}s  {rate:9.0f} states/s")
    return rows


if __name__ == "__main__":
    bench()
