"""Run the benchmark modules ``benchmarks/bench_*.py`` (each has a ``main()``).

    python -m benchmarks.run [--quick] [--results DIR] [NAME ...]

NAME selects the modules whose name contains it (all by default). ``--quick``: reduced sizes,
results into a temporary folder unless ``--results`` says otherwise (never into the committed
``benchmarks/results``); ``--results DIR``: where ``<name>.json`` goes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("names", nargs="*", help="run the benchmarks whose name contains one")
    parser.add_argument("--quick", action="store_true", help="reduced sizes (a smoke run)")
    parser.add_argument("--results", type=Path, help="folder of the result files")
    args = parser.parse_args(argv)
    if args.quick:
        os.environ["GLASSCAM_BENCH_QUICK"] = "1"
    if args.results:
        os.environ["GLASSCAM_BENCH_RESULTS"] = str(args.results.resolve())
    here = Path(__file__).resolve().parent
    names = sorted(p.stem for p in here.glob("bench_*.py"))
    wanted = [n for n in names if not args.names or any(a in n for a in args.names)]
    if not wanted:
        print(f"no benchmark matches {args.names}; have {names}", file=sys.stderr)
        return 2
    for name in wanted:
        print(f"=== {name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
