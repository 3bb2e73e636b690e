"""Which machine made a result: CPU model, cores, memory, torch threads and versions.

Float results differ across CPUs (vector units, libm), so every table of results names its machine.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s ``model name``; elsewhere what :mod:`platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def machine_info() -> dict[str, Any]:
    """The machine as JSON-able fields: cpu, cores, memory_gib, torch_threads, system, python, torch."""
    import torch

    mem = _memory_gib()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": None if mem is None else round(mem, 1),
        "torch_threads": torch.get_num_threads(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def machine_description(info: dict[str, Any] | None = None) -> str:
    """:func:`machine_info` in one line (CPU model, cores, memory, Python and torch versions, threads)."""
    m = info if info is not None else machine_info()
    mem = f", {m['memory_gib']:.0f} GiB RAM" if m.get("memory_gib") is not None else ""
    return (
        f"{m['cpu']}, {m['cores']} cores{mem}; {m['system']}; "
        f"Python {m['python']}, torch {m['torch']} ({m['torch_threads']} threads)"
    )
