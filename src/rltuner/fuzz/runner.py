"""Run mutated inputs through each format's reader and tally what happened.

Each input is written to a temporary file and read in this process under :func:`rltuner.limits.time_limit`.
Outcomes: kept, a counted drop (by reason), a clear refusal (by error class), a crash (any other exception,
``MemoryError`` included) or a timeout (the reader ran past ``seconds_per_input``). Peak memory is the
process's maximum resident set size after the format's inputs (``getrusage``), which only grows, so a
format's figure bounds everything before it as well.
"""

from __future__ import annotations

import random
import resource
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rltuner.errors import ReadTimeoutError
from rltuner.fuzz.formats import FORMATS
from rltuner.limits import time_limit


@dataclass
class FormatResult:
    """What the inputs of one format did."""

    name: str
    inputs: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)  # one line each: the exception and the input's file
    timeouts: int = 0
    seconds: float = 0.0
    slowest_s: float = 0.0
    peak_rss_mib: float = 0.0

    @property
    def kept(self) -> int:
        return self.outcomes["kept"]

    def drops(self) -> Counter[str]:
        return Counter({k: v for k, v in self.outcomes.items() if k != "kept"})


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_format(
    name: str,
    inputs: int,
    *,
    seed: int = 0,
    seconds_per_input: float = 5.0,
    keep_crashes: Path | None = None,
) -> FormatResult:
    """Feed ``inputs`` mutated files (the unmutated seeds first) to the reader of format ``name``.

    Args:
        name: a key of :data:`FORMATS`.
        inputs: how many inputs to try.
        seed: seeds the mutations (same seed, same inputs).
        seconds_per_input: the time limit of one read (beyond it: a timeout).
        keep_crashes: a folder to copy crashing or timed-out inputs into (for a bug report).
    """
    fmt = FORMATS[name]
    rng = random.Random(f"{seed}-{name}")
    seeds = fmt.seeds()
    result = FormatResult(name)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"rltuner-fuzz-{name}-") as tmp:
        path = Path(tmp) / f"input{fmt.suffix}"
        for i in range(inputs):
            data = seeds[i] if i < len(seeds) else fmt.mutate(rng.choice(seeds), rng)
            path.write_bytes(data)
            t0 = time.perf_counter()
            try:
                with time_limit(seconds_per_input):
                    outcome = fmt.read(path)
            except ReadTimeoutError:
                outcome = "timeout"
                result.timeouts += 1
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                outcome = "crash"
                where = traceback.extract_tb(exc.__traceback__)[-1]
                result.crashes.append(
                    f"{type(exc).__name__}: {str(exc)[:160]} ({Path(where.filename).name}:{where.lineno})"
                )
            elapsed = time.perf_counter() - t0
            result.slowest_s = max(result.slowest_s, elapsed)
            if outcome in ("crash", "timeout") and keep_crashes is not None:
                keep_crashes.mkdir(parents=True, exist_ok=True)
                (keep_crashes / f"{name}-{i}{fmt.suffix}").write_bytes(data)
            result.outcomes[outcome] += 1
            result.inputs += 1
    result.seconds = time.perf_counter() - began
    result.peak_rss_mib = _peak_rss_mib()
    return result


def run_formats(names: Iterable[str], inputs: int, **kwargs: object) -> list[FormatResult]:
    return [run_format(n, inputs, **kwargs) for n in names]  # type: ignore[arg-type]


def format_table(results: list[FormatResult]) -> str:
    """A Markdown table: inputs, kept, drops/refusals by reason, crashes, timeouts, time, peak memory."""
    lines = [
        "| format | inputs | kept | dropped or refused (by reason) | crashes | timeouts | slowest input | "
        "time | peak RSS |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        drops = r.drops()
        drops.pop("crash", None)
        drops.pop("timeout", None)
        reasons = ", ".join(f"{k.split(':', 1)[-1]} {v:,}" for k, v in drops.most_common())
        lines.append(
            f"| {r.name} | {r.inputs:,} | {r.kept:,} | {reasons or '-'} | {len(r.crashes):,} | {r.timeouts:,} | "
            f"{r.slowest_s:.2f} s | {r.seconds:.1f} s | {r.peak_rss_mib:,.0f} MiB |"
        )
    return "\n".join(lines)
