"""Self-describing checkpoints in safetensors: weights plus JSON metadata, loaded without unpickling.

File layout: a plain safetensors file. Its string metadata holds ``"format": "rltuner-checkpoint"``,
``"format_version"`` and one entry per metadata key, each value encoded as JSON (``kind``, ``model``: the
model config, ``step``, ``dataset_hash``, ``metrics``, ``rltuner_version``, ...). Anything that goes wrong when
reading one becomes a single :class:`~rltuner.errors.CheckpointError` that says what and where.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rltuner.errors import CheckpointError, ConfigError
from rltuner.fileio import atomic_path, write_bytes_atomic
from rltuner.models.prior import Prior, build_prior

FORMAT = "rltuner-checkpoint"
FORMAT_VERSION = 1
DEFAULT_PRIOR_FILE = "note_rnn.safetensors"
_RESERVED = ("format", "format_version")
_MAX_STATE_BYTES = 4 * 2**30  # a resume state holds a model and its optimizer: far below this


def _version() -> str:
    from rltuner import __version__

    return __version__


def save_checkpoint(path: str | os.PathLike[str], tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    """Write tensors and JSON-able metadata to ``path`` atomically (a half-written file never replaces it).

    Args:
        path: output file (``.safetensors`` by convention); parent folders are created.
        tensors: name -> tensor (moved to the CPU and made contiguous; shared storage is copied).
        meta: JSON-able values; must contain ``"kind"``. ``rltuner_version`` is added when absent.

    Returns:
        The path written.
    """
    from safetensors.torch import save

    if "kind" not in meta:
        raise ValueError("checkpoint metadata needs a 'kind'")
    clash = [k for k in meta if k in _RESERVED]
    if clash:
        raise ValueError(f"metadata keys {clash} are reserved")
    full = {"rltuner_version": _version(), **meta}
    strings = {k: json.dumps(v, sort_keys=True, default=_json_default) for k, v in full.items()}
    strings["format"] = FORMAT
    strings["format_version"] = str(FORMAT_VERSION)
    cpu = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    return write_bytes_atomic(path, _canonical_header(save(cpu, metadata=strings)))


def _canonical_header(data: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted.

    safetensors writes the metadata in hash-map order, which changes from one process to the next, so two
    runs with the same seed gave files that differ in bytes; sorted, a checksum confirms reproducibility.
    Tensor offsets are relative to the data section, so only the header changes.
    """
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to a multiple of 8 bytes
    return struct.pack("<Q", len(text)) + text + data[8 + n :]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Returns:
        (tensors, meta): CPU tensors by name, and the decoded metadata.

    Raises:
        CheckpointError: missing, unreadable, corrupt or truncated file, or not an rltuner checkpoint.
    """
    from safetensors.torch import load

    p = Path(path)
    if p.is_dir():
        raise CheckpointError(f"{p} is a folder, not a checkpoint file")
    try:
        size = p.stat().st_size
        if size > _MAX_STATE_BYTES:
            raise CheckpointError(f"{p} is {size:,} bytes, over the 4 GiB limit of a checkpoint")
        data = p.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {p} does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {p}: {exc.strerror or exc}") from None
    raw_meta = _header_metadata(data, p)
    if raw_meta.get("format") != FORMAT:
        raise CheckpointError(f"{p} is a safetensors file but not an rltuner checkpoint (no format marker)")
    if raw_meta.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{p} has checkpoint format version {raw_meta.get('format_version')}; this rltuner reads "
            f"version {FORMAT_VERSION}"
        )
    try:
        tensors = load(data)
    except Exception as exc:  # safetensors raises its own error types for corrupt data
        raise CheckpointError(f"checkpoint {p} is corrupt ({exc})") from None
    meta: dict[str, Any] = {}
    for key, value in raw_meta.items():
        if key in _RESERVED:
            continue
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            raise CheckpointError(f"checkpoint {p} has unreadable metadata entry {key!r}") from None
    return tensors, meta


def _header_metadata(data: bytes, path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header, checked enough to tell junk from a checkpoint."""
    not_ckpt = f"{path} is not a checkpoint (not a safetensors file, or corrupt or truncated)"
    if len(data) < 8:
        raise CheckpointError(not_ckpt)
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8 or header_len > 100_000_000:
        raise CheckpointError(not_ckpt)
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(not_ckpt) from None
    if not isinstance(header, dict):
        raise CheckpointError(not_ckpt)
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise CheckpointError(not_ckpt)
    return {str(k): str(v) for k, v in meta.items()}


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Only the metadata of a checkpoint (cheap: reads the header)."""
    return read_checkpoint(path)[1]


def save_training_state(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write a resume state (tensors, plain containers, JSON strings) atomically with ``torch.save``.

    Only what ``torch.load(weights_only=True)`` accepts may be in it, so loading never runs pickled code.
    """
    target = Path(path)
    with atomic_path(target) as tmp:
        torch.save(state, tmp)
    return target


def load_training_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a resume state written by :func:`save_training_state` (safely: ``weights_only=True``).

    Raises:
        CheckpointError: the file is missing, corrupt or not a resume state.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"nothing to resume: {p} does not exist")
    if p.stat().st_size > _MAX_STATE_BYTES:
        raise CheckpointError(f"cannot resume from {p}: {p.stat().st_size:,} bytes is over the 4 GiB limit")
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not for the user
            warnings.simplefilter("ignore")
            state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message advises weights_only=False, i.e. running whatever code the file holds: never.
        raise CheckpointError(
            f"cannot resume from {p}: it holds Python objects other than tensors and plain data, so it was "
            "not written by rltuner (or was altered); it is not loaded, for safety"
        ) from None
    except Exception as exc:  # corrupt or foreign file: one clear error
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot resume from {p}: not a readable resume state ({first})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"cannot resume from {p}: not a resume state")
    return state


def save_prior(path: str | os.PathLike[str], model: Prior, **meta: Any) -> Path:
    """Save a prior's weights with its model config (kind ``"prior"``) and any extra metadata.

    Typical extras: ``step``, ``dataset_hash``, ``metrics`` (dict), ``train_config`` (dict).
    """
    full = {"kind": "prior", "model": model.model_config(), **meta}
    return save_checkpoint(path, dict(model.state_dict()), full)


def prior_from_tensors(tensors: dict[str, Tensor], model_config: Any, source: str) -> Prior:
    """Rebuild a prior from its config and weights; any mismatch is a :class:`CheckpointError`.

    Checked before the model is allocated: the config's size limits (``rltuner.limits``), then every weight's
    name and shape against a copy of the model built on the ``meta`` device (no memory), its dtype (float32,
    as saved) and its values (all finite: NaN or infinite weights make a model that samples garbage).
    """
    try:
        with torch.device("meta"):
            skeleton = build_prior(model_config)
    except ConfigError as exc:
        raise CheckpointError(f"{source} has an invalid model config: {exc}") from None
    expected = skeleton.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not fit a {model_config.get('arch', '?')} model: "
            f"missing weights {missing[:5]}, unexpected weights {unexpected[:5]}"
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{source}: weight {name} has shape {tuple(tensor.shape)}, the model config needs "
                f"{tuple(expected[name].shape)}"
            )
        if tensor.dtype != expected[name].dtype:
            raise CheckpointError(
                f"{source}: weight {name} is {str(tensor.dtype).replace('torch.', '')}, expected "
                f"{str(expected[name].dtype).replace('torch.', '')} (rltuner saves float32 weights)"
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{source}: weight {name} holds NaN or infinite values")
    model = build_prior(model_config)
    model.load_state_dict(tensors)
    return model.eval()


def load_prior(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[Prior, dict[str, Any]]:
    """Load a prior saved by :func:`save_prior` (in eval mode, on ``device``).

    Returns:
        (model, meta).

    Raises:
        CheckpointError: unreadable file, a checkpoint of another kind, or weights that do not fit the config.
    """
    tensors, meta = read_checkpoint(path)
    kind = meta.get("kind")
    if kind != "prior":
        hint = " (a tuned model: use load_model)" if kind == "tuned" else ""
        raise CheckpointError(f"{path} is a checkpoint of kind {kind!r}, not a prior{hint}")
    if not isinstance(meta.get("model"), dict):
        raise CheckpointError(f"{path} has no model config")
    model = prior_from_tensors(tensors, meta["model"], str(path))
    return model.to(device), meta


def default_prior_path() -> Path:
    """Path of the pretrained Note RNN shipped inside the package.

    Raises:
        CheckpointError: this install has no shipped prior.
    """
    path = Path(str(resources.files("rltuner").joinpath("assets", DEFAULT_PRIOR_FILE)))
    if not path.is_file():
        raise CheckpointError(
            f"no pretrained prior shipped with this install ({path} is missing); train one with "
            "`rltuner pretrain --out note_rnn.safetensors` and pass it with --model"
        )
    return path


def load_default_prior(device: str | torch.device = "cpu") -> Prior:
    """The shipped pretrained Note RNN (LSTM, 100 cells), in eval mode."""
    return load_prior(default_prior_path(), device)[0]
