"""`vfiospec check | generate | validate` (wired by vfiospec/cli.py).  Each
function takes argv, parses it with argparse and returns an exit code."""

from __future__ import annotations

import argparse
import sys
import time


def _progress_printer(model: str):
    t0 = time.monotonic()

    def progress(line: str):
        if sys.stderr.isatty():
            sys.stderr.write(f"\r  {model}: [{time.monotonic() - t0:5.0f}s] {line[:110]}\033[K")
        else:
            sys.stderr.write(f"  {model}: [{time.monotonic() - t0:.0f}s] {line}\n")
        sys.stderr.flush()
    return progress


def check_main(argv) -> int:
    """Model-check shipped models with TLC and compare with their manifest.json."""
    from . import tlc

    ap = argparse.ArgumentParser(prog="vfiospec check", description=check_main.__doc__)
    ap.add_argument("models", nargs="*", metavar="MODEL", help="model names (default: all): " + ", ".join(tlc.list_models()))
    ap.add_argument("--workers", type=int, default=1, help="TLC -workers N (threads in the one JVM)")
    ap.add_argument("--trace", action="store_true", help="print the counterexample of a violated model as a trace-format v1 document")
    args = ap.parse_args(argv)
    try:
        tlc.find_java(), tlc.find_jar(), tlc.check_jpype()
    except tlc.TlcSetupError as exc:
        print(f"vfiospec check: {exc}", file=sys.stderr)
        return 2
    models = args.models or tlc.list_models()
    failed = 0
    for model in models:
        try:
            man = tlc.load_manifest(model)
        except KeyError as exc:
            print(f"vfiospec check: {exc.args[0]}", file=sys.stderr)
            return 2
        sys.stderr.write(f"checking {model} ({man['module']}.tla, {man['config']}) ...\n")
        res, man = tlc.check_model(model, workers=args.workers, progress=_progress_printer(model))
        if sys.stderr.isatty():
            sys.stderr.write("\r\033[K")
        diffs = tlc.compare_manifest(res, man)
        verdict = "OK  " if not diffs else "FAIL"
        print(f"{verdict} {model}: {res.summary()}")
        for d in diffs:
            print(f"     {d}")
        if res.errors and res.outcome == "error":
            for e in res.errors[:3]:
                print("     " + e.replace("\n", "\n     "))
        if res.trace and res.outcome != "success":
            from .traces import counterexample_text
            print(counterexample_text(res, man))
            if args.trace:
                import json
                from .traces import counterexample_trace
                print(json.dumps(counterexample_trace(res, man), indent=1))
        failed += bool(diffs)
    return 1 if failed else 0


def generate_main(argv) -> int:
    """Run TLC simulation and write N trace-format v1 traces with the spec's expectations."""
    from .generate import generate, GENERATORS

    ap = argparse.ArgumentParser(prog="vfiospec generate", description=generate_main.__doc__)
    ap.add_argument("--out", required=True, help="directory for the trace files")
    ap.add_argument("-n", type=int, default=10, help="number of traces (default 10)")
    ap.add_argument("--depth", type=int, default=12, help="steps per behaviour (TLC -depth, default 12)")
    ap.add_argument("--seed", type=int, default=1, help="first TLC -seed (trace k uses seed+k)")
    ap.add_argument("--model", action="append", choices=sorted(GENERATORS),
                    help="models to simulate (default: the base models that map to uAPI steps; "
                         "variants such as type1_guest only when named)")
    ap.add_argument("--max-errors", type=int, default=1,
                    help="at most this many failing calls in a row (default 1; -1: no bound, a uniform random walk)")
    args = ap.parse_args(argv)
    paths = generate(args.out, n=args.n, depth=args.depth, seed=args.seed, models=args.model,
                     log=lambda s: print(s, file=sys.stderr),
                     max_errors=None if args.max_errors < 0 else args.max_errors)
    print(f"wrote {len(paths)} traces to {args.out}")
    return 0 if paths else 1


def validate_main(argv) -> int:
    """Check recorded traces against the spec with TLC (implementation -> spec)."""
    from .validate import validate_file

    ap = argparse.ArgumentParser(prog="vfiospec validate", description=validate_main.__doc__)
    ap.add_argument("traces", nargs="+", metavar="TRACE")
    ap.add_argument("--run-on", metavar="TARGET",
                    help="first run each trace on this conformance target (e.g. reference) and validate "
                         "the results it records instead of the trace's expectations")
    args = ap.parse_args(argv)
    bad = 0
    for path in args.traces:
        if args.run_on:
            import json
            from .validate import recorded_run, validate_doc
            with open(path) as f:
                rep = validate_doc(recorded_run(json.load(f), args.run_on))
        else:
            rep = validate_file(path)
        print(rep.text())
        bad += not rep.accepted
    return 1 if bad else 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cmds = {"check": check_main, "generate": generate_main, "validate": validate_main}
    if not argv or argv[0] not in cmds:
        print("usage: python -m vfiospec.spec.cli check|generate|validate ...", file=sys.stderr)
        return 2
    return cmds[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
