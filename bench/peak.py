"""Run a Python script and write its peak resident memory (VmHWM, KiB) to $BENCH_PEAK_FILE.

The OS's own figure, read when the script exits. wait4's ru_maxrss would also count the
benchmark process that forked it (Linux keeps the pre-exec peak), so each step reports its
own peak this way.

Usage: python bench/peak.py SCRIPT [ARGS...]
"""

import atexit
import os
import runpy
import sys


def _write_peak() -> None:
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    with open(os.environ["BENCH_PEAK_FILE"], "w") as out:
        out.write(str(kib))


if __name__ == "__main__":
    atexit.register(_write_peak)
    sys.argv = sys.argv[1:]
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
    runpy.run_path(sys.argv[0], run_name="__main__")
