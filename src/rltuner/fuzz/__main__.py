"""``python -m rltuner.fuzz``: the large fuzz run (see docs/data.md, "Hostile input")."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

from rltuner.fuzz.runner import FORMATS, format_table, run_format


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rltuner.fuzz",
        description="Feed mutated inputs of every format to rltuner's readers and print a table of outcomes "
        "(docs/data.md, 'Hostile input'). Exit status 1 when any input crashed or hung.",
    )
    parser.add_argument("--inputs", type=int, default=10_000, help="inputs per format (default 10,000)")
    parser.add_argument("--formats", default="all", help=f"comma-separated, or 'all': {', '.join(FORMATS)}")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mutations")
    parser.add_argument("--seconds-per-input", type=float, default=5.0, help="time limit of one read")
    parser.add_argument("--keep-crashes", type=Path, default=None, help="copy failing inputs here")
    args = parser.parse_args(argv)
    if args.inputs < 1 or args.seconds_per_input <= 0:
        parser.error("--inputs and --seconds-per-input must be positive")
    names = list(FORMATS) if args.formats == "all" else [n.strip() for n in args.formats.split(",")]
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        parser.error(f"unknown format(s) {', '.join(unknown)}; known: {', '.join(FORMATS)}")
    results = []
    for name in names:
        res = run_format(
            name, args.inputs, seed=args.seed, seconds_per_input=args.seconds_per_input,
            keep_crashes=args.keep_crashes,
        )  # fmt: skip
        results.append(res)
        print(f"{name}: {res.inputs:,} inputs in {res.seconds:.1f} s", file=sys.stderr)
        for line in sorted(set(res.crashes))[:10]:
            print(f"  crash: {line}", file=sys.stderr)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"fuzz run {when}, seed {args.seed}, {args.inputs:,} inputs per format, "
          f"{args.seconds_per_input:g} s per input; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print(format_table(results))
    return 1 if any(r.crashes or r.timeouts for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
