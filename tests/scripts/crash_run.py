"""Run a `bayesrm` command and SIGKILL it at its K-th durable write (used by tests/test_crash.py).

    python tests/scripts/crash_run.py [fsync:]K COUNT_FILE -- bayesrm-arguments...

A "durable write" is a call of ``os.replace`` (every atomic write: checkpoints, JSON, caches'
side files) or ``os.fsync`` (every flushed append: sample cache, RL logs). With K >= 1 the process
kills itself with SIGKILL (kill -9: no cleanup, no ``finally``) just *before* the K-th such call,
i.e. with that file written but not yet in place. K = 0 runs to the end. Either way the number of
calls made so far is written to COUNT_FILE after each call (so the test learns how many there are).
"""

import os
import signal
import sys


def main() -> int:
    kind, _, k = sys.argv[1].rpartition(":")
    kill_kind, kill_at, count_file = kind or "any", int(k), sys.argv[2]
    args = sys.argv[sys.argv.index("--") + 1 :]
    calls = {"any": 0, "fsync": 0}
    real_replace, real_fsync = os.replace, os.fsync

    def hook(real, name):
        def wrapped(*a, **kw):
            calls["any"] += 1
            calls[name] = calls.get(name, 0) + 1
            if calls[kill_kind] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            result = real(*a, **kw)
            with open(count_file, "w") as f:
                f.write(f"{calls['any']} {calls['fsync']}")
            return result

        return wrapped

    os.replace, os.fsync = hook(real_replace, "replace"), hook(real_fsync, "fsync")
    from bayesrm.cli.main import main as bayesrm

    return bayesrm(args)


if __name__ == "__main__":
    sys.exit(main())
