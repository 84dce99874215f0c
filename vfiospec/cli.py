"""The `vfiospec` command."""

from __future__ import annotations

import importlib
import sys

# command -> (module, function, one-line help)
COMMANDS = {
    "replay": ("vfiospec.conformance.replay", "main", "run trace files against a target and judge them"),
    "run": ("vfiospec.conformance.run", "main", "the main job: traces + stateful exploration, with reports"),
    "mutants": ("vfiospec.conformance.mutants", "main", "run the suite against every seeded bug; kill matrix"),
    "requirements": ("vfiospec.requirements", "main", "list the requirement registry"),
    "prove": ("vfiospec.model.cli", "prove_main", "prove every invariant inductive over every action (z3)"),
    "explore": ("vfiospec.model.cli", "explore_main", "bounded model checking of a property (z3)"),
    "check": ("vfiospec.spec.cli", "check_main", "model-check the TLA+ specs with TLC"),
    "generate": ("vfiospec.spec.cli", "generate_main", "TLC simulation -> conformance traces"),
    "validate": ("vfiospec.spec.cli", "validate_main", "check a recorded trace against the TLA+ spec"),
    "lane": ("vfiospec.lane", "lane_main", "real kernels under QEMU: build, boot, run, report"),
    "bench": ("vfiospec.bench", "main", "benchmarks: figures and ratios, printed and as JSON"),
}


def usage() -> str:
    lines = ["usage: vfiospec COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {c:<13} {h}" for c, (_, _, h) in COMMANDS.items()]
    lines += ["", "`vfiospec COMMAND --help` describes each one."]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from vfiospec import __version__
        print(f"vfiospec {__version__}")
        return 0
    cmd = argv.pop(0)
    if cmd not in COMMANDS:
        print(f"vfiospec: unknown command {cmd!r}\n\n{usage()}", file=sys.stderr)
        return 2
    mod, fn, _ = COMMANDS[cmd]
    try:
        m = importlib.import_module(mod)
    except ModuleNotFoundError as e:
        if e.name and mod.startswith(e.name):
            print(f"vfiospec {cmd}: not available in this build ({mod} is missing)", file=sys.stderr)
            return 3
        raise
    rc = getattr(m, fn)(argv)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
