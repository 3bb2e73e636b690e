"""A fuzz suite for every reader: mutated inputs grown from valid seed files, run in-process with limits.

``python -m rltuner.fuzz --inputs 10000`` runs every format (see ``docs/data.md``, "Hostile input");
``tests/test_fuzz_small.py`` runs the same code at a small size in ``make test``.
"""

from rltuner.fuzz.runner import FORMATS, FormatResult, format_table, run_format, run_formats

__all__ = ["FORMATS", "FormatResult", "format_table", "run_format", "run_formats"]
