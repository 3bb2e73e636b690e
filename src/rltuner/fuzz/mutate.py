"""Byte-level and structured mutations (the classic AFL-style set, plus numbers a hostile user would try)."""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable

# Values that break careless code: zero, one, sign boundaries, powers of two near overflow.
INTERESTING_INTS = (0, 1, -1, 2**7 - 1, 2**8 - 1, 2**15 - 1, 2**16 - 1, 2**28 - 1, 2**31 - 1, 2**32 - 1)
INTERESTING_NUMBERS: tuple[object, ...] = (
    0, -1, 1e30, 1e308, -1e308, 1e-300, 2**63, 10**20, 10**9, 10**6, "nan", "inf", "-inf", "x", None, [], {},
)  # fmt: skip


def flip_bits(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


def set_bytes(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if buf:
            buf[rng.randrange(len(buf))] = rng.choice((0x00, 0x01, 0x7F, 0x80, 0xFF, rng.randrange(256)))
    return bytes(buf)


def set_int(data: bytes, rng: random.Random) -> bytes:
    """Overwrite 1, 2 or 4 bytes (big or little endian) with an interesting integer."""
    if len(data) < 4:
        return data
    width = rng.choice((1, 2, 4))
    value = rng.choice(INTERESTING_INTS) % (1 << (8 * width))
    fmt = {1: "B", 2: "H", 4: "I"}[width]
    packed = struct.pack((">" if rng.random() < 0.5 else "<") + fmt, value)
    i = rng.randrange(len(data) - width + 1)
    return data[:i] + packed + data[i + width :]


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data) + 1)] if data else data


def delete_chunk(data: bytes, rng: random.Random) -> bytes:
    if len(data) < 2:
        return data
    i = rng.randrange(len(data))
    return data[:i] + data[i + rng.randint(1, min(64, len(data) - i)) :]


def duplicate_chunk(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    i = rng.randrange(len(data))
    chunk = data[i : i + rng.randint(1, 256)]
    j = rng.randrange(len(data) + 1)
    return data[:j] + chunk * rng.randint(1, 16) + data[j:]


def insert_random(data: bytes, rng: random.Random) -> bytes:
    j = rng.randrange(len(data) + 1)
    return data[:j] + rng.randbytes(rng.randint(1, 32)) + data[j:]


def random_bytes(data: bytes, rng: random.Random) -> bytes:
    return rng.randbytes(rng.randint(0, 256))


BYTE_MUTATORS: tuple[Callable[[bytes, random.Random], bytes], ...] = (
    flip_bits, set_bytes, set_int, truncate, delete_chunk, duplicate_chunk, insert_random, random_bytes,
)  # fmt: skip


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One to three byte-level mutations in a row."""
    for _ in range(rng.randint(1, 3)):
        data = rng.choice(BYTE_MUTATORS)(data, rng)
    return data


def mutate_json_value(obj: object, rng: random.Random) -> object:
    """A copy of a JSON tree with one leaf (or one key's value) replaced by an interesting value."""
    if isinstance(obj, dict) and obj:
        key = rng.choice(sorted(obj))
        out = dict(obj)
        if rng.random() < 0.15:
            del out[key]
            return out
        out[key] = mutate_json_value(obj[key], rng) if isinstance(obj[key], (dict, list)) else _number(rng)
        return out
    if isinstance(obj, list) and obj:
        i = rng.randrange(len(obj))
        return [*obj[:i], mutate_json_value(obj[i], rng), *obj[i + 1 :]]
    return _number(rng)


def _number(rng: random.Random) -> object:
    value = rng.choice(INTERESTING_NUMBERS)
    return float(value) if value in ("nan", "inf", "-inf") and rng.random() < 0.5 else value


def dumps_loose(obj: object) -> str:
    """JSON that may hold NaN/Infinity (as Python writes them): what a careless tool produces."""
    return json.dumps(obj, allow_nan=True)
