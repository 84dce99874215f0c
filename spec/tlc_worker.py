"""One TLC run in this process's own JVM: ``python -m vfiospec.spec.tlc_worker JAR ARGS...``.

TLC keeps static state (tlc2.TLCGlobals, the output printer), so every check
gets a fresh process.  ``tlc2.TLC.main`` calls System.exit; we call
``handleParameters`` and ``process`` instead, print TLC's internal result code
(tlc2.output.EC) on a line of its own, and leave with ``os._exit`` because
TLC's worker threads are not daemons and would keep the JVM alive.
"""

import os
import sys

RESULT_TAG = "@@VFIOSPEC-RESULT"


def main(argv):
    jar, *args = argv
    import jpype

    jvm_opts = [o for o in os.environ.get("VFIOSPEC_JVM_OPTS", "").split() if o]
    jpype.startJVM(*jvm_opts, classpath=[jar], convertStrings=True)
    code = 1000
    try:
        TLC = jpype.JClass("tlc2.TLC")
        tlc = TLC()
        if not tlc.handleParameters(jpype.JArray(jpype.JString)(args)):
            code = 1000
        else:
            code = int(tlc.process())
    except Exception as exc:  # a JVM exception: report, never hang
        print(f"worker exception: {exc!r}", flush=True)
        code = 1000
    jpype.JClass("java.lang.System").out.flush()
    sys.stdout.write(f"\n{RESULT_TAG} {code}\n")
    sys.stdout.flush()
    os._exit(0)


def server_main(argv):
    """Run ``tlc2.tool.distributed.TLCServer`` (``python -m ... --server JAR ARGS``)."""
    _run_main(argv, "tlc2.tool.distributed.TLCServer")


def _run_main(argv, cls):
    jar, *args = argv
    import jpype

    jpype.startJVM(classpath=[jar], convertStrings=True)
    try:
        jpype.JClass(cls).main(jpype.JArray(jpype.JString)(args))
    finally:
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--server"]:
        server_main(sys.argv[2:])
    elif sys.argv[1:2] == ["--worker"]:
        _run_main(sys.argv[2:], "tlc2.tool.distributed.TLCWorker")
    else:
        main(sys.argv[1:])
