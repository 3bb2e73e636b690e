"""Reading ``.npy`` and ``.npz`` files safely: headers checked before any array is allocated.

``numpy.load`` trusts the shape in an array's header and allocates it before reading the data, so a 100-byte
file can ask for terabytes. These readers look at every header first: the dtype must be one the caller
accepts, the element count within ``limits.max_array_elements``, and the stored size must match the header
(a truncated or padded member is refused). Pickled object arrays are never loaded.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from rltuner.limits import DEFAULT as LIMITS
from rltuner.limits import ReadLimits


class ArrayFileError(ValueError):
    """An array file is corrupt, of an unexpected dtype or shape, or beyond the size limit."""


def _check_header(fh: IO[bytes], size: int, kinds: str, name: str, limits: ReadLimits) -> None:
    """Read and check one ``.npy`` header from ``fh`` (left positioned at the data)."""
    with warnings.catch_warnings():
        _check_header_quietly(fh, size, kinds, name, limits)


def _check_header_quietly(fh: IO[bytes], size: int, kinds: str, name: str, limits: ReadLimits) -> None:
    try:
        warnings.simplefilter("ignore")  # numpy's note on Python 2 headers is not for the user
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as exc:  # ValueError and friends on a broken header
        raise ArrayFileError(f"{name}: not a .npy array ({exc})") from None
    if dtype.hasobject or dtype.kind not in kinds:
        raise ArrayFileError(f"{name}: unexpected dtype {dtype} (expected kind {kinds!r})")
    count = 1
    for dim in shape:
        count *= int(dim)
    if count > limits.max_array_elements:
        raise ArrayFileError(
            f"{name}: {count:,} elements, over the limit of {limits.max_array_elements:,} (max_array_elements)"
        )
    if fh.tell() + count * dtype.itemsize != size:
        raise ArrayFileError(f"{name}: the stored data does not match its header (truncated or padded)")


def load_npy(path: str | os.PathLike[str], kinds: str = "iub", limits: ReadLimits = LIMITS) -> np.ndarray:
    """One ``.npy`` array whose dtype kind is in ``kinds`` (numpy's letters: ``i`` int, ``u``, ``b``, ``f``...).

    Raises:
        ArrayFileError: not a .npy file, another dtype, too large, truncated.
        OSError: the file cannot be read.
    """
    p = Path(path)
    with p.open("rb") as fh:
        _check_header(fh, p.stat().st_size, kinds, "the array", limits)
    return np.asarray(np.load(p, allow_pickle=False))


def load_npz(
    path: str | os.PathLike[str], expected: Mapping[str, str], limits: ReadLimits = LIMITS
) -> dict[str, Any]:
    """The arrays of an ``.npz`` named in ``expected`` (name -> accepted dtype kinds); others are ignored.

    Error messages do not repeat the path (the caller names the file).

    Raises:
        ArrayFileError: not a zip of .npy files, a missing member, another dtype, too large, truncated.
        OSError: the file cannot be read.
    """
    p = Path(path)
    try:
        with zipfile.ZipFile(p) as zf:
            members = {info.filename: info for info in zf.infolist()}
            out: dict[str, Any] = {}
            for name, kinds in expected.items():
                info = members.get(name + ".npy")
                if info is None:
                    raise ArrayFileError(f"missing array {name!r}")
                with zf.open(info) as fh:
                    _check_header(fh, info.file_size, kinds, f"array {name!r}", limits)
                with zf.open(info) as fh:
                    out[name] = np.lib.format.read_array(fh, allow_pickle=False)
            return out
    except (ArrayFileError, OSError):
        raise
    except (
        Exception
    ) as exc:  # zipfile and zlib raise many kinds (BadZipFile; an encrypted member: RuntimeError)
        raise ArrayFileError(f"not a readable .npz archive ({type(exc).__name__}: {exc})") from None
