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


# CPU features the speed depends on: AVX-512 for the fp32 kernels, AMX / AVX512-BF16 for bf16 autocast.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags() -> list[str]:
    """Which of :data:`SPEED_FLAGS` the CPU has (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [f for f in SPEED_FLAGS if f in present]
    except OSError:
        pass
    return []


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 1)
    except (OSError, AttributeError):
        return None


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
        "cpu_flags": cpu_flags(),
        "load_average": _load_average(),
        "cores": os.cpu_count(),
        "memory_gib": None if mem is None else round(mem, 1),
        "torch_threads": torch.get_num_threads(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def machine_key(info: dict[str, Any] | None = None, accelerator: str | None = None) -> str:
    """Which machine measured a figure, in a few words: CPU model and core count, and the accelerator when the
    work ran on one (e.g. ``"AMD EPYC, 2 cores"``, ``"AMD EPYC, 16 cores, NVIDIA H200"``). A CPU with AMX says
    so (``"Intel(R) Xeon(R) Processor with AMX, 2 cores"``): virtual machines of one model name differ in
    whether they expose it, and the bf16 figures with it.

    BENCHMARKS.md keeps one section per topic and key, so figures of different machines stand side by side
    while a re-run on the same machine replaces its own.

    Args:
        info: :func:`machine_info`'s fields (read now when None; ``cpu``, ``cores`` and ``cpu_flags`` are used).
        accelerator: the GPU's name (``torch.cuda.get_device_name()``) when the figures were measured on it.
    """
    m: dict[str, Any] = (
        info if info is not None else {"cpu": cpu_model(), "cores": os.cpu_count(), "cpu_flags": cpu_flags()}
    )
    amx = " with AMX" if "amx_bf16" in (m.get("cpu_flags") or []) else ""
    key = f"{m['cpu']}{amx}, {m['cores']} cores"
    return f"{key}, {accelerator}" if accelerator else key


def machine_description(info: dict[str, Any] | None = None) -> str:
    """:func:`machine_info` in one line (CPU model and speed flags, cores, memory, Python and torch versions,
    threads, the load average when the record was made)."""
    m = info if info is not None else machine_info()
    mem = f", {m['memory_gib']:.0f} GiB RAM" if m.get("memory_gib") is not None else ""
    flags = m.get("cpu_flags")
    flag_text = "" if flags is None else f" (flags: {' '.join(flags) or 'none of ' + ' '.join(SPEED_FLAGS)})"
    load = m.get("load_average")
    load_text = (
        "" if load is None else f"; load average {load:.1f} (other processes shared the CPU when above 0)"
    )
    return (
        f"{m['cpu']}{flag_text}, {m['cores']} cores{mem}; {m['system']}; "
        f"Python {m['python']}, torch {m['torch']} ({m['torch_threads']} thread{'' if m['torch_threads'] == 1 else 's'})"
        f"{load_text}"
    )
