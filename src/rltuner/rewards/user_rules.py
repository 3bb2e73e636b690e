"""User music-theory rules named on the command line (``--rule MODULE:FUNCTION``), imported and registered.

A spec is ``[NAME=]TARGET[@WEIGHT]``: ``TARGET`` is ``package.module:function`` (imported from ``sys.path``,
the current folder included) or ``path/to/file.py:function``; ``NAME`` defaults to the function's name and
``WEIGHT`` to 1. The function is the one :func:`rltuner.rewards.music_theory.register_rule` takes:
``fn(history, action, t, length) -> (B,) float``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rltuner.errors import ConfigError

logger = logging.getLogger(__name__)


def _split_spec(spec: str) -> tuple[str | None, str, float]:
    name: str | None = None
    target = spec.strip()
    head, sep, rest = target.partition("=")
    if sep and ":" not in head:
        name, target = head.strip(), rest.strip()
    weight = 1.0
    body, at, w = target.rpartition("@")
    if at:
        try:
            weight = float(w)
        except ValueError:
            raise ConfigError(f"--rule {spec!r}: weight {w!r} is not a number") from None
        if not math.isfinite(weight):
            raise ConfigError(f"--rule {spec!r}: weight {w!r} must be a finite number")
        target = body
    module, colon, attr = target.rpartition(":")
    if not colon or not module or not attr.isidentifier():
        raise ConfigError(
            f"--rule {spec!r}: expected MODULE:FUNCTION or FILE.py:FUNCTION, e.g. my_rules:strong_beats"
        )
    return name, target, weight


def _import(target: str, spec: str) -> tuple[Any, str]:
    """(the module, a fingerprint of its source) for ``target``'s module part."""
    module_part = target.rpartition(":")[0]
    if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
        path = Path(module_part)
        if not path.is_file():
            raise ConfigError(f"--rule {spec!r}: no such file {path}")
        source = path.read_bytes()
        unique = "rltuner_user_rule_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        loader_spec = importlib.util.spec_from_file_location(unique, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ConfigError(f"--rule {spec!r}: cannot import {path}")
        module = importlib.util.module_from_spec(loader_spec)
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:  # the user's code: any failure becomes one line
            raise ConfigError(
                f"--rule {spec!r}: importing {path} failed: {type(exc).__name__}: {exc}"
            ) from None
        return module, hashlib.sha256(source).hexdigest()
    added = "" not in sys.path and "." not in sys.path
    if added:
        sys.path.insert(0, "")  # the current folder, as `python -m` has it, for this import only
    try:
        module = importlib.import_module(module_part)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"--rule {spec!r}: no module named {exc.name!r}") from None
    except Exception as exc:
        raise ConfigError(
            f"--rule {spec!r}: importing {module_part} failed: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        if added:
            sys.path.remove("")
    file = getattr(module, "__file__", None)
    digest = hashlib.sha256(Path(file).read_bytes()).hexdigest() if file and Path(file).is_file() else ""
    return module, digest


def _probe(name: str, fn: Any, spec: str) -> None:
    """Call the rule once on two one-step melodies, so a wrong signature fails now, in one line."""
    try:
        value = np.asarray(fn(np.zeros((2, 0), dtype=np.int64), np.array([14, 1], dtype=np.int64), 0, 32))
    except Exception as exc:
        raise ConfigError(
            f"--rule {spec!r}: {name}(history, action, t, length) failed on a test melody: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if value.shape not in ((2,), ()) or not np.issubdtype(value.dtype, np.number):
        raise ConfigError(
            f"--rule {spec!r}: {name} must return one number per melody, shape (B,); got shape {value.shape}"
        )
    if not np.isfinite(value.astype(np.float64)).all():
        raise ConfigError(f"--rule {spec!r}: {name} returned a value that is not finite ({value.tolist()})")


def load_rule(spec: str) -> tuple[str, Any, float, dict[str, Any]]:
    """Import the rule of one ``--rule`` spec (not registered).

    Returns:
        (name, function, weight, a JSON-able description with a fingerprint of the rule's source).

    Raises:
        ConfigError: a malformed spec, a module or file that cannot be imported, a missing or non-callable
            attribute, or a function that fails on a test melody.
    """
    name, target, weight = _split_spec(spec)
    module, digest = _import(target, spec)
    attr = target.rpartition(":")[2]
    if not hasattr(module, attr):
        raise ConfigError(f"--rule {spec!r}: {target.rpartition(':')[0]} has no attribute {attr!r}")
    fn = getattr(module, attr)
    if not callable(fn):
        raise ConfigError(f"--rule {spec!r}: {attr} is a {type(fn).__name__}, not a function")
    name = name or attr
    _probe(name, fn, spec)
    return name, fn, weight, {"name": name, "target": target, "weight": weight, "sha256": digest}


def register_rule_specs(specs: Sequence[str]) -> list[dict[str, Any]]:
    """Import and register every ``--rule`` spec (replacing a rule of the same name).

    Returns:
        One description per rule (name, target, weight, source digest), for run records and fingerprints.

    Raises:
        ConfigError: see :func:`load_rule`; also a name taken by a built-in rule or given twice.
    """
    from rltuner.rewards.music_theory import register_rule

    described: list[dict[str, Any]] = []
    seen: set[str] = set()
    for spec in specs:
        name, fn, weight, desc = load_rule(spec)
        if name in seen:
            raise ConfigError(f"--rule {spec!r}: a rule named {name!r} is given twice")
        seen.add(name)
        register_rule(name, fn, weight=weight, replace=True)
        logger.debug("registered rule %s = %s (weight %g)", name, desc["target"], weight)
        described.append(desc)
    return described
