"""Run every benchmark in this directory, one subprocess each, and summarise.

Usage: ``python benchmarks/run_all.py [NAME ...]`` (default: all). Each benchmark writes its
own JSON to ``benchmarks/results/``; this script only runs them in turn and reports which
succeeded, so one failing benchmark does not hide the others.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIP = {"run_all.py", "gpu.py"}  # gpu.py runs only on a machine with CUDA, on its own


def main(argv: list[str]) -> int:
    scripts = sorted(
        p for p in HERE.glob("*.py") if p.name not in SKIP and not p.name.startswith("_")
    )
    if argv:
        wanted = {a.removesuffix(".py") for a in argv}
        scripts = [p for p in scripts if p.stem in wanted]
    failed = []
    for script in scripts:
        t0 = time.perf_counter()
        sys.stderr.write(f"== {script.name}\n")
        rc = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        sys.stderr.write(f"== {script.name}: rc={rc} in {time.perf_counter() - t0:.0f}s\n")
        if rc != 0:
            failed.append(script.name)
    if failed:
        sys.stderr.write(f"failed: {', '.join(failed)}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
