"""The fuzzed formats: for each, valid seed files (made the way the test suite makes them) and the reader.

A reader takes a path and returns an outcome: ``"kept"``, ``"dropped:<reason>"`` (a counted drop in a build)
or ``"refused:<ErrorClass>"`` (one clear :class:`~rltuner.errors.RLTunerError`). Anything else it raises is
a crash, and running past the per-input time limit is a hang.
"""

from __future__ import annotations

import io
import json
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rltuner.errors import ReadTimeoutError, RLTunerError
from rltuner.fuzz.mutate import dumps_loose, mutate_bytes, mutate_json_value

Reader = Callable[[Path], str]
Structured = Callable[[bytes, random.Random], bytes]


@dataclass(frozen=True)
class Format:
    """One fuzzed format."""

    name: str
    suffix: str
    seeds: Callable[[], list[bytes]]
    read: Reader
    structured: Structured | None = None  # a format-aware mutation, used for half of the inputs

    def mutate(self, seed: bytes, rng: random.Random) -> bytes:
        if self.structured is not None and rng.random() < 0.5:
            try:
                return self.structured(seed, rng)
            except Exception:  # a structured mutation that does not apply to this seed
                pass
        return mutate_bytes(seed, rng)


def refused(exc: RLTunerError) -> str:
    if isinstance(exc, ReadTimeoutError):  # the fuzz runner's own time limit: a hang, not a refusal
        raise exc
    return f"refused:{type(exc).__name__}"


def _extraction_outcome(counts: Any) -> str:
    from rltuner.data.midi_import import DROP_REASONS

    if counts.get("kept", 0):
        return "kept"
    drops = [(counts.get(r, 0), r) for r in DROP_REASONS if counts.get(r, 0)]
    if not drops:
        raise AssertionError(f"no outcome counted: {dict(counts)}")  # every candidate must be counted
    return "dropped:" + max(drops)[1]


# ----------------------------------------------------------------------------------------------------- MIDI


def _midi_bytes(tracks: list[list[tuple[int, int, int]]], *, tpq: int = 480, key: str | None = None) -> bytes:
    import mido

    mid = mido.MidiFile(type=1, ticks_per_beat=tpq)
    step = tpq // 4 or 1
    for channel, notes in enumerate(tracks):
        events: list[tuple[int, int, Any]] = []
        if key is not None and channel == 0:
            events.append((0, 0, mido.MetaMessage("key_signature", key=key)))
        for pitch, start, dur in notes:
            events.append(
                (start * step, 2, mido.Message("note_on", note=pitch, velocity=80, channel=channel))
            )
            events.append(((start + dur) * step, 1, mido.Message("note_off", note=pitch, channel=channel)))
        events.sort(key=lambda e: (e[0], e[1]))
        track, now = mido.MidiTrack(), 0
        for tick, _, msg in events:
            track.append(msg.copy(time=tick - now))
            now = tick
        mid.tracks.append(track)
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def midi_seeds() -> list[bytes]:
    scale = [(60 + p, 4 * i, 4) for i, p in enumerate([0, 2, 4, 5, 7, 9, 11, 12])]
    chords = [(60, 0, 8), (64, 0, 8), (67, 2, 4), (72, 8, 8), (55, 9, 3)]
    triplet = [(62, 0, 1), (64, 1, 2), (65, 3, 1), (67, 4, 12)]
    long_note = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x01MTrk\x00\x00\x00\x0f\x00\x90<P\xff\xff\xff\x7f\x80<\x00\x00\xff/\x00"
    return [
        _midi_bytes([scale], key="C"),
        _midi_bytes([scale * 1, chords], key="Dm"),
        _midi_bytes([triplet, scale], tpq=96),
        _midi_bytes([[(48 + (7 * i) % 36, 2 * i, 2) for i in range(200)]], tpq=1),
        long_note,
    ]


def midi_structured(seed: bytes, rng: random.Random) -> bytes:
    """Edit a header field (format, tracks, division) or give a note an extreme delta time / length."""
    choice = rng.randrange(4)
    if choice == 0:  # header fields
        field_at = rng.choice((8, 10, 12))
        value = rng.choice((0, 1, 2, 3, 0x7FFF, 0x8000 | 25, 0xFFFF, rng.randrange(65536)))
        return seed[:field_at] + struct.pack(">H", value) + seed[field_at + 2 :]
    if choice == 1:  # one huge delta time (4-byte variable-length quantity) after the first note-on
        at = seed.find(b"\x90")
        if at < 1:
            return seed
        huge = rng.choice((b"\xff\xff\xff\x7f", b"\x8f\xff\xff\x7f", b"\x81\x80\x80\x00"))
        return seed[: at + 3] + huge + seed[at + 4 :]
    if choice == 2:  # many copies of the first track (a many-track file), fixing the header count
        start = seed.find(b"MTrk")
        if start < 0:
            return seed
        length = int.from_bytes(seed[start + 4 : start + 8], "big")
        chunk = seed[start : start + 8 + length]
        copies = rng.choice((2, 50, 1500))
        body = seed[:start] + chunk * copies + seed[start + 8 + length :]
        return body[:10] + struct.pack(">H", min(copies, 0xFFFF)) + body[12:]
    return seed[:14] + mutate_bytes(seed[14:], rng)  # keep the header, mutate the tracks


def read_midi(path: Path) -> str:
    from rltuner.data.midi_import import ExtractSettings, midi_file_to_melodies

    return _extraction_outcome(midi_file_to_melodies(path, ExtractSettings(min_length=1)).counts)


def read_midi_primer(path: Path) -> str:
    """The single-file reader behind ``--primer x.mid``, ``rltuner score`` and ``rltuner render``."""
    from rltuner.data.midi_io import midi_to_melody

    try:
        midi_to_melody(path)
    except RLTunerError as exc:
        return refused(exc)
    return "kept"


# ------------------------------------------------------------------------------------------------------ ABC


def abc_seeds() -> list[bytes]:
    def tune(key: str, body: str, unit: str = "1/8") -> bytes:
        return f"X:1\nT:fuzz\nM:4/4\nL:{unit}\nK:{key}\n{body}\n".encode()

    return [
        tune("C", "CDEF GABc|cBAG FEDC|"),
        tune("Dm", "DEFG A2d2|(3cBA G2 F2E2|D8|"),
        tune("G", "|:GABc dedB|dedB dedB:|[GB]2 [Ac]2 d4|"),
        tune("Ador", "A,B,CD E2A2|z8|z8|z8|EDCB, A,4|", unit="1/16"),
    ]


def abc_structured(seed: bytes, rng: random.Random) -> bytes:
    """Change a header field or repeat the body many times (a long tune, many repeats)."""
    lines = seed.decode("utf-8", "replace").splitlines()
    choice = rng.randrange(3)
    if choice == 0:
        field = rng.choice(("L:", "M:", "K:", "Q:"))
        value = rng.choice(("1/100000", "0", "1/0", "99999/1", "H", "Xyz", "C clef=bass", "1000000000"))
        lines = [f"{field}{value}" if ln.startswith(field) else ln for ln in lines]
        if not any(ln.startswith(field) for ln in lines):
            lines.insert(2, f"{field}{value}")
    elif choice == 1:
        lines[-1] = lines[-1] * rng.choice((10, 200))
    else:
        lines[-1] = rng.choice(("|:", "::", "[")) * rng.randint(1, 200) + lines[-1]
    return "\n".join(lines).encode()


def read_abc(path: Path) -> str:
    from rltuner.data.abc_corpus import abc_to_melodies
    from rltuner.data.midi_import import ExtractSettings

    text = path.read_bytes().decode("utf-8", "replace")
    return _extraction_outcome(abc_to_melodies(text, ExtractSettings(min_length=1)).counts)


# ---------------------------------------------------------------------------------------------- .npy / .npz


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def npy_seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    return [
        _npy(rng.integers(0, 38, size=(8, 32), dtype=np.int64)),
        _npy(np.array([2, 1, 1, 0, 14, 1], dtype=np.int8)),
        _npy(rng.integers(0, 38, size=(3, 16)).astype(np.float64)),
    ]


def npy_structured(seed: bytes, rng: random.Random) -> bytes:
    """Rewrite the header: another shape (huge, empty, many dimensions) or dtype, keeping the data."""
    header_len = int.from_bytes(seed[8:10], "little")
    data = seed[10 + header_len :]
    shape = rng.choice(((10**12,), (2**31, 2**31), (0,), (1, 1, 1, 1, 1, 1, 1, 1), (-1,), (4, 2**40)))
    descr = rng.choice(("<i8", "|i1", "<f8", "|O", "<c16", "<U8", "|b1", ">i8"))
    text = repr({"descr": descr, "fortran_order": rng.random() < 0.2, "shape": shape})
    header = (text + " " * (64 - (len(text) + 11) % 64) + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def read_npy(path: Path) -> str:
    from rltuner.cli.render import load_npy_melodies

    try:
        load_npy_melodies(path)
    except RLTunerError as exc:
        return refused(exc)
    return "kept"


def dataset_seeds() -> list[bytes]:
    import tempfile

    from rltuner.data.dataset import FORMAT_NAME, FORMAT_VERSION, MelodyDataset, save_dataset

    rng = np.random.default_rng(1)
    melodies = [rng.integers(0, 38, size=n).astype(np.int8) for n in (32, 40, 64, 33)]
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "counts": {"kept": 4}}
    with tempfile.TemporaryDirectory() as tmp:
        path = save_dataset(MelodyDataset(melodies[:3], melodies[3:], manifest), Path(tmp) / "d.npz")
        return [path.read_bytes()]


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def npz_structured(seed: bytes, rng: random.Random) -> bytes:
    """Re-pack the archive with one array changed: dtype, values, length, a huge header, or removed."""
    with np.load(io.BytesIO(seed), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    name = rng.choice(sorted(arrays))
    arr = arrays[name]
    choice = rng.randrange(5)
    if choice == 0:
        del arrays[name]
    elif choice == 1 and arr.dtype.kind != "U":
        arrays[name] = arr.astype(rng.choice((np.float64, np.int32, np.uint8, np.float16)))
    elif choice == 2 and arr.size and arr.dtype.kind in "iu":
        arr = arr.copy()
        arr.flat[rng.randrange(arr.size)] = rng.choice((-1, 127, 10**6, -(2**40), 2**40))
        arrays[name] = arr
    elif choice == 3 and arr.dtype.kind == "U":
        try:
            obj = json.loads(str(arr))
            arrays[name] = np.array(dumps_loose(mutate_json_value(obj, rng)))
        except json.JSONDecodeError:
            arrays[name] = np.array("{")
    else:  # a member whose header claims a giant shape
        packed = _npz(arrays)
        big = npy_structured(_npy(arr), rng)
        return packed.replace(_npy(arr), big, 1) if _npy(arr) in packed else packed
    return _npz(arrays)


def read_dataset(path: Path) -> str:
    from rltuner.data.dataset import load_dataset

    try:
        load_dataset(path)
    except RLTunerError as exc:
        return refused(exc)
    return "kept"


def cache_seeds() -> list[bytes]:
    import tempfile

    from rltuner.data.midi_import import _save_cache, empty_extraction

    entries = {}
    for i, n in enumerate((32, 48)):
        ext = empty_extraction()
        ext.melodies.append(np.full(n, 1, dtype=np.int8))
        ext.counts.update({"files": 1, "tunes": 1, "kept": 1})
        entries[f"/music/{i}.mid|100|1"] = ext
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.npz"
        _save_cache(path, entries)
        return [path.read_bytes()]


def read_cache(path: Path) -> str:
    """The MIDI-import cache: a bad one must be discarded (an empty result), never raise."""
    from rltuner.data.midi_import import _load_cache

    return "kept" if _load_cache(path) else "dropped:rebuilt"


# ---------------------------------------------------------------------------------------- checkpoints, state


def checkpoint_seeds() -> list[bytes]:
    import tempfile

    import torch

    from rltuner.models.checkpoint import save_checkpoint, save_prior
    from rltuner.models.prior import ModelConfig, build_prior
    from rltuner.rl.policy import policy_checkpoint

    torch.manual_seed(0)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ("lstm", "gru", "transformer"):
            model = build_prior(ModelConfig(arch=arch, hidden_size=8, num_heads=2, context=16))  # type: ignore[arg-type]
            out.append(save_prior(Path(tmp) / f"{arch}.safetensors", model, step=3).read_bytes())
        q, p = build_prior(ModelConfig(hidden_size=8)), build_prior(ModelConfig(hidden_size=8))
        tensors, meta = policy_checkpoint(q, p, "g", {"step": 1})
        out.append(save_checkpoint(Path(tmp) / "tuned.safetensors", tensors, meta).read_bytes())
    return out


def checkpoint_structured(seed: bytes, rng: random.Random) -> bytes:
    """Edit the safetensors header: a model config value, a tensor's dtype or shape, or NaN weights."""
    (n,) = struct.unpack("<Q", seed[:8])
    header = json.loads(seed[8 : 8 + n])
    data = bytearray(seed[8 + n :])
    meta = header["__metadata__"]
    names = [k for k in header if k != "__metadata__"]
    choice = rng.randrange(4)
    if choice == 0:
        key = rng.choice([k for k in ("model", "q_network_config", "prior_config") if k in meta])
        config = json.loads(meta[key])
        config[rng.choice(sorted(config))] = rng.choice((10**9, 10**6, 0, -1, 1e30, "x", None, 2**63))
        meta[key] = json.dumps(config)
    elif choice == 1:
        header[rng.choice(names)]["dtype"] = rng.choice(("F16", "BF16", "I64", "F64", "U8", "BOOL", "XX"))
    elif choice == 2:
        header[rng.choice(names)]["shape"] = rng.choice(([10**9], [0], [2**31, 2**31], [-1], []))
    else:
        nan = struct.pack("<f", float(rng.choice(("nan", "inf"))))
        lo, hi = header[rng.choice(names)]["data_offsets"]
        data[lo:hi] = nan * ((hi - lo) // 4) + bytes((hi - lo) % 4)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + bytes(data)


def read_checkpoint(path: Path) -> str:
    from rltuner.loading import load_model

    try:
        load_model(path)
    except RLTunerError as exc:
        return refused(exc)
    return "kept"


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("pickled code ran",))


def resume_seeds() -> list[bytes]:
    import pickle

    import torch

    state = {
        "model": {"w": torch.zeros(3, 2)},
        "numpy_rng": json.dumps(np.random.default_rng(0).bit_generator.state),
        "info": json.dumps({"step": 5, "history": []}),
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    evil = io.BytesIO()
    torch.save({"x": _Evil()}, evil, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    return [buf.getvalue(), evil.getvalue()]


def read_resume(path: Path) -> str:
    from rltuner.models.checkpoint import load_training_state

    try:
        load_training_state(path)
    except RLTunerError as exc:
        return refused(exc)
    return "kept"


def config_seeds() -> list[bytes]:
    from rltuner.config import to_dict
    from rltuner.rl.config import PRESETS

    return [json.dumps(to_dict(p)).encode() for p in PRESETS.values()]


def config_structured(seed: bytes, rng: random.Random) -> bytes:
    return dumps_loose(mutate_json_value(json.loads(seed), rng)).encode()


def read_config(path: Path) -> str:
    """A tuning run's ``config.json``, as ``rltuner tune --resume`` reads it."""
    import shutil
    import tempfile

    from rltuner.cli.tune import _saved_config

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(path, Path(tmp) / "config.json")
        try:
            _saved_config(Path(tmp))
        except RLTunerError as exc:
            return refused(exc)
    return "kept"


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("midi", ".mid", midi_seeds, read_midi, midi_structured),
        Format("midi-primer", ".mid", midi_seeds, read_midi_primer, midi_structured),
        Format("abc", ".abc", abc_seeds, read_abc, abc_structured),
        Format("npy", ".npy", npy_seeds, read_npy, npy_structured),
        Format("dataset", ".npz", dataset_seeds, read_dataset, npz_structured),
        Format("midi-cache", ".npz", cache_seeds, read_cache, npz_structured),
        Format("checkpoint", ".safetensors", checkpoint_seeds, read_checkpoint, checkpoint_structured),
        Format("resume", ".pt", resume_seeds, read_resume),
        Format("config", ".json", config_seeds, read_config, config_structured),
    )
}
