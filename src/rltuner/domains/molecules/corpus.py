"""Molecule corpora: MOSES from the ``molsets`` wheel or a user's SMILES file, canonicalised into a dataset.

A molecule dataset file is an ``.npz`` (read with ``allow_pickle=False``) holding, for the train and validation
splits, the flat int8 token ids of all molecules (no ``<bos>``/``<eos>``) and int64 offsets, plus the manifest
as a JSON string (the vocabulary is in it). The same manifest is written beside it as ``<name>.manifest.json``.
Every molecule is canonicalised by RDKit and de-duplicated; the split is by a hash of the canonical SMILES and
the seed, so it depends on nothing but the content.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rltuner.config import field
from rltuner.data.dataset import _flatten, _make_readable, _unflatten, cache_dir, manifest_path
from rltuner.domains.molecules.smiles import MAX_LENGTH, SPECIAL_TOKENS, Vocabulary, tokenize
from rltuner.errors import ConfigError, DatasetError, RLTunerError
from rltuner.fileio import atomic_path, ensure_writable_dir, write_json_atomic

FORMAT_NAME = "rltuner-molecule-dataset"
FORMAT_VERSION = 1
BUILD_VERSION = 1  # bumped whenever the build's output changes for the same settings
MOSES = "moses"
MOSES_FILES = {
    "train": "moses/dataset/data/train.csv.gz",
    "test": "moses/dataset/data/test.csv.gz",
    "test_scaffolds": "moses/dataset/data/test_scaffolds.csv.gz",
}
MAX_LINE_CHARS = 10_000  # a line longer than this is not a SMILES: counted, never parsed
MAX_FILE_BYTES = 2 << 30  # 2 GiB of (decompressed) text
DROP_REASONS = ("empty", "line_too_long", "invalid", "too_long", "duplicate")
INSTALL_HINT = "pip install 'rltuner[molecules]' (or: pip install rdkit && pip install --no-deps molsets)"


def require_rdkit() -> None:
    """Raise one clear :class:`RLTunerError` when RDKit is missing."""
    try:
        import rdkit  # noqa: F401
    except ImportError:
        raise RLTunerError(f"the molecule domain needs RDKit: {INSTALL_HINT}") from None


def moses_file(split: str = "train") -> Path:
    """The path of a MOSES split inside the installed ``molsets`` wheel (``train``, ``test``, ``test_scaffolds``).

    The files are located through the wheel's metadata: importing ``moses`` would pull in its own (unbuildable)
    dependencies.

    Raises:
        RLTunerError: ``molsets`` is not installed or the file is missing.
    """
    import importlib.metadata as md

    if split not in MOSES_FILES:
        raise ConfigError(f"unknown MOSES split {split!r}; choose one of {', '.join(MOSES_FILES)}")
    try:
        dist = md.distribution("molsets")
    except md.PackageNotFoundError:
        raise RLTunerError(
            f"the MOSES corpus ships in the molsets wheel, which is missing: {INSTALL_HINT}"
        ) from None
    path = Path(str(dist.locate_file(MOSES_FILES[split])))
    if not path.is_file():
        raise RLTunerError(f"the molsets wheel lacks {MOSES_FILES[split]}; reinstall it: {INSTALL_HINT}")
    return path


def _open_text(path: Path) -> io.TextIOBase:
    raw = path.open("rb")
    head = raw.read(2)
    raw.seek(0)
    stream: Any = gzip.GzipFile(fileobj=raw) if head == b"\x1f\x8b" else raw
    return io.TextIOWrapper(stream, encoding="utf-8", errors="strict", newline="")


def read_smiles_file(path: str | os.PathLike[str], counts: Counter[str] | None = None) -> list[str]:
    """The SMILES strings in a file, in file order (not yet checked by RDKit).

    Formats, gzipped or not (detected by content): ``.csv`` with a column named ``SMILES`` (any case); any
    other file holds one molecule per line, its first whitespace-separated field (``.smi``/``.txt``; a first
    line reading ``smiles`` is a header). Blank lines, lines over :data:`MAX_LINE_CHARS` and undecodable lines
    are counted in ``counts`` (``empty``, ``line_too_long``, ``unreadable``), never parsed.

    Raises:
        DatasetError: the file is missing, is a folder, is not text, holds no SMILES, or is a CSV without a
            SMILES column.
    """
    p = Path(path)
    counts = counts if counts is not None else Counter()
    if not p.exists():
        raise DatasetError(f"SMILES file {p} does not exist")
    if not p.is_file():
        raise DatasetError(f"{p} is not a file (give a .smi, .txt or .csv file of SMILES)")
    is_csv = p.name.lower().removesuffix(".gz").endswith(".csv")
    out: list[str] = []
    try:
        with _open_text(p) as fh:
            lines = _bounded_lines(fh, p)
            if is_csv:
                out = _read_csv_column(lines, p, counts)
            else:
                for i, line in enumerate(lines):
                    if line is None:
                        counts["line_too_long"] += 1
                        continue
                    fields = line.split()
                    if not fields:
                        counts["empty"] += 1
                        continue
                    if i == 0 and fields[0].lower() == "smiles":
                        continue
                    out.append(fields[0])
    except UnicodeDecodeError:
        raise DatasetError(f"{p} is not a text file of SMILES (it is not UTF-8 text)") from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DatasetError(f"cannot read {p}: {exc}") from None
    if not out:
        raise DatasetError(f"{p} holds no SMILES")
    return out


def _bounded_lines(fh: io.TextIOBase, path: Path) -> Iterator[str | None]:
    """Lines without their ending; ``None`` for a line over the limit (its rest is skipped unread)."""
    total = 0
    while True:
        line = fh.readline(MAX_LINE_CHARS + 1)
        if not line:
            return
        total += len(line)
        if total > MAX_FILE_BYTES:
            raise DatasetError(f"{path} is larger than {MAX_FILE_BYTES >> 20} MiB of text")
        if "\x00" in line:
            raise UnicodeDecodeError("utf-8", b"\x00", 0, 1, "NUL byte")
        if len(line) > MAX_LINE_CHARS and not line.endswith("\n"):
            while True:  # skip the rest of the overlong line in bounded pieces
                rest = fh.readline(MAX_LINE_CHARS)
                total += len(rest)
                if not rest or rest.endswith("\n"):
                    break
            yield None
            continue
        yield line.rstrip("\r\n")


def _read_csv_column(lines: Iterable[str | None], path: Path, counts: Counter[str]) -> list[str]:
    it = iter(lines)
    header_line = next(it, None)
    if header_line is None:
        raise DatasetError(f"{path} is empty")
    header = next(csv.reader([header_line]))
    names = [h.strip().lower() for h in header]
    if "smiles" not in names:
        raise DatasetError(f"{path} has no SMILES column (its columns: {', '.join(header) or 'none'})")
    col = names.index("smiles")
    out = []
    for line in it:
        if line is None:
            counts["line_too_long"] += 1
            continue
        row = next(csv.reader([line]), [])
        value = row[col].strip() if col < len(row) else ""
        if not value:
            counts["empty"] += 1
            continue
        out.append(value)
    return out


def _canonical_chunk(smiles: Sequence[str]) -> list[str | None]:
    """Canonical isomeric SMILES, or None where RDKit cannot parse (a worker's unit of work)."""
    from rdkit import Chem, rdBase

    out: list[str | None] = []
    with rdBase.BlockLogs():  # invalid strings are counted, not printed
        for s in smiles:
            mol = Chem.MolFromSmiles(s)
            out.append(Chem.MolToSmiles(mol) if mol is not None and mol.GetNumAtoms() > 0 else None)
    return out


def _prepare_chunk(args: tuple[Sequence[str], int]) -> tuple[list[str | None], list[int], set[str]]:
    """A worker's first pass: canonical SMILES (None: invalid), their token counts, and the tokens of the
    molecules within ``max_length`` tokens (the vocabulary is the union of these over all chunks)."""
    smiles, max_length = args
    canon = _canonical_chunk(smiles)
    lengths: list[int] = []
    tokens: set[str] = set()
    for c in canon:
        toks = tokenize(c) if c is not None else []
        lengths.append(len(toks))
        if len(toks) <= max_length:
            tokens.update(toks)
    return canon, lengths, tokens


def _encode_chunk(args: tuple[Sequence[str], tuple[str, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """A worker's second pass: the token ids of each SMILES, flat (int8), and each one's length."""
    smiles, vocab_tokens = args
    index = {t: i for i, t in enumerate(vocab_tokens)}
    flat: list[int] = []
    lengths = np.empty(len(smiles), dtype=np.int64)
    for k, smi in enumerate(smiles):
        ids = [index[t] for t in tokenize(smi)]
        flat.extend(ids)
        lengths[k] = len(ids)
    return np.asarray(flat, dtype=np.int8), lengths


def _map_chunks(
    fn: Any, chunks: list[Any], jobs: int, sizes: list[int], desc: str, progress: bool
) -> list[Any]:
    """``fn`` over ``chunks`` in order, in ``jobs`` worker processes (0: one per core), with a progress bar."""
    from tqdm import tqdm

    workers = jobs or (os.cpu_count() or 1)
    out: list[Any] = []
    with tqdm(total=sum(sizes), unit="mol", unit_scale=True, desc=desc, disable=not progress) as bar:
        if workers == 1 or len(chunks) == 1:
            for chunk, size in zip(chunks, sizes, strict=True):
                out.append(fn(chunk))
                bar.update(size)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for result, size in zip(pool.map(fn, chunks), sizes, strict=True):
                    out.append(result)
                    bar.update(size)
    return out


CHUNK = 20_000  # molecules per worker task


def canonicalize(smiles: Sequence[str], jobs: int = 0, progress: bool = False) -> list[str | None]:
    """RDKit canonical SMILES of each string (None where invalid), in order, over ``jobs`` processes.

    Args:
        smiles: the strings.
        jobs: worker processes (0: one per core; 1: in this process). The result does not depend on it.
        progress: a progress bar on stderr.
    """
    require_rdkit()
    chunk = 20_000
    parts = [smiles[i : i + chunk] for i in range(0, len(smiles), chunk)]
    workers = jobs or (os.cpu_count() or 1)
    from tqdm import tqdm

    bar = tqdm(total=len(smiles), unit="mol", unit_scale=True, desc="canonicalise", disable=not progress)
    out: list[str | None] = []
    try:
        if workers == 1 or len(parts) == 1:
            for part in parts:
                out.extend(_canonical_chunk(part))
                bar.update(len(part))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for part, result in zip(parts, pool.map(_canonical_chunk, parts), strict=True):
                    out.extend(result)
                    bar.update(len(part))
    finally:
        bar.close()
    return out


@dataclass(frozen=True)
class MoleculeBuildConfig:
    """What a molecule dataset is built from (``rltuner data build --domain molecules`` options)."""

    source: str = field(MOSES, "'moses' (the MOSES train set inside the molsets wheel) or a SMILES file path")
    limit: int = field(0, "use only the first N molecules of the source (0: all)")
    seed: int = field(0, "seed of the train/validation split")
    valid_fraction: float = field(0.01, "fraction of molecules in the validation split")
    max_length: int = field(MAX_LENGTH - 1, "longest molecule kept, in tokens (the episode adds <eos>)")
    jobs: int = field(0, "worker processes (0: one per CPU core); does not change the result")

    def validate(self) -> None:
        if not self.source:
            raise ConfigError("give a source: 'moses' or a SMILES file")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ConfigError(f"valid_fraction must be in [0, 1), not {self.valid_fraction}")
        if self.limit < 0 or self.jobs < 0:
            raise ConfigError("limit and jobs must not be negative")
        if not 1 <= self.max_length <= 10_000:
            raise ConfigError(f"max_length must be in 1..10000, not {self.max_length}")

    def settings_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("jobs")
        if data["source"] != MOSES:
            data["source"] = str(Path(data["source"]).resolve())
        return data

    def settings_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.settings_dict(), sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class MoleculeDataset:
    """Canonical SMILES of the train and validation splits, as token ids, with the vocabulary and manifest.

    Attributes:
        train / valid: int8 arrays of token ids (no ``<bos>``/``<eos>``), one per molecule.
        vocab: the :class:`Vocabulary` the ids refer to.
        manifest: format, source, counts (every drop by reason), vocabulary, split, settings, content hash.
    """

    train: list[npt.NDArray[np.int8]]
    valid: list[npt.NDArray[np.int8]]
    vocab: Vocabulary
    manifest: dict[str, Any]

    def smiles(self, split: str = "train") -> list[str]:
        """The canonical SMILES of a split, in order."""
        toks = self.vocab.tokens
        return [
            "".join(toks[i] for i in m.tolist()) for m in (self.train if split == "train" else self.valid)
        ]

    def sequences(self, split: str = "train") -> list[np.ndarray]:
        """Model inputs: ``<bos>`` + ids + ``<eos>`` as int64 arrays (what pretraining reads)."""
        from rltuner.domains.molecules.smiles import BOS_ID, EOS_ID

        mols = self.train if split == "train" else self.valid
        return [np.concatenate([[BOS_ID], m.astype(np.int64), [EOS_ID]]) for m in mols]

    def content_hash(self) -> str:
        return str(self.manifest["content_hash"])


@dataclass(frozen=True)
class MoleculeBuildReport:
    path: Path
    counts: dict[str, int]
    train: int
    valid: int
    seconds: float
    manifest: dict[str, Any]

    def format(self) -> str:
        c = self.counts
        lines = [
            f"dataset: {self.path}",
            f"  strings read      {c.get('read', 0):>10,}",
            f"  molecules kept    {c.get('kept', 0):>10,}  (train {self.train:,}, valid {self.valid:,})",
            f"  vocabulary        {len(self.manifest['vocabulary']):>10,}  tokens (with <pad>, <bos>, <eos>)",
            "  dropped:",
        ]
        lines += [f"    {r:<15}{c.get(r, 0):>10,}" for r in DROP_REASONS]
        lines.append(f"  content hash {self.manifest['content_hash'][:16]}..., built in {self.seconds:.1f} s")
        return "\n".join(lines)


def _split_key(smiles: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}|{smiles}".encode()).digest()[:8]


def build_molecule_dataset(
    config: MoleculeBuildConfig | None = None,
    out_path: str | os.PathLike[str] = "data/molecules.npz",
    *,
    progress: bool = True,
) -> MoleculeBuildReport:
    """Read, canonicalise, de-duplicate, tokenise and split a SMILES corpus; write it atomically.

    Raises:
        ConfigError: a bad setting. DatasetError: an unreadable source or nothing usable in it.
        RLTunerError: RDKit / molsets missing, or the output folder is not writable.
    """
    config = config or MoleculeBuildConfig()
    config.validate()
    require_rdkit()
    out = Path(out_path)
    ensure_writable_dir(out.parent if str(out.parent) else ".")
    began = time.perf_counter()
    counts: Counter[str] = Counter({r: 0 for r in DROP_REASONS})
    if config.source == MOSES:
        raw = read_smiles_file(moses_file("train"), counts)
        source: dict[str, Any] = {
            "kind": "moses",
            "file": MOSES_FILES["train"],
            "licence": "MIT (MOSES, Polykovskiy et al. 2020)",
        }
    else:
        raw = read_smiles_file(config.source, counts)
        source = {"kind": "file", "path": str(Path(config.source).resolve()), "licence": "the user's own"}
    if config.limit:
        raw = raw[: config.limit]
    counts["read"] = len(raw) + counts["empty"] + counts["line_too_long"]
    # Pass 1 in workers: canonicalise, count tokens, collect the tokens of the molecules short enough.
    parts = [raw[i : i + CHUNK] for i in range(0, len(raw), CHUNK)]
    prepared = _map_chunks(
        _prepare_chunk, [(part, config.max_length) for part in parts], config.jobs, [len(p) for p in parts],
        "canonicalise", progress,
    )  # fmt: skip
    kept: dict[str, None] = {}
    seen_tokens: set[str] = set()
    for canon, lengths, tokens in prepared:
        seen_tokens |= tokens
        for c, n in zip(canon, lengths, strict=True):
            if c is None:
                counts["invalid"] += 1
            elif c in kept:
                counts["duplicate"] += 1
            elif n > config.max_length:
                counts["too_long"] += 1
            else:
                kept[c] = None
    if not kept:
        drops = ", ".join(f"{r} {counts[r]}" for r in DROP_REASONS if counts[r]) or "nothing read"
        raise DatasetError(f"no usable molecule in {config.source} ({drops})")
    vocab = Vocabulary(SPECIAL_TOKENS + tuple(sorted(seen_tokens)))
    if len(vocab) > 127:
        raise DatasetError(f"{config.source} has {len(vocab)} distinct tokens; at most 127 are supported")
    molecules = list(kept)
    n_valid = round(config.valid_fraction * len(molecules))
    if config.valid_fraction > 0 and len(molecules) >= 2:
        n_valid = min(max(n_valid, 1), len(molecules) - 1)
    order = sorted(range(len(molecules)), key=lambda i: _split_key(molecules[i], config.seed))
    chosen = set(order[:n_valid])
    # Pass 2 in workers: token ids with the final vocabulary.
    mol_parts = [molecules[i : i + CHUNK] for i in range(0, len(molecules), CHUNK)]
    coded = _map_chunks(
        _encode_chunk, [(part, vocab.tokens) for part in mol_parts], config.jobs, [len(p) for p in mol_parts],
        "tokenise", progress,
    )  # fmt: skip
    flat = np.concatenate([f for f, _ in coded])
    lengths = np.concatenate([n for _, n in coded])
    encoded = np.split(flat, np.cumsum(lengths)[:-1])
    train = [e for i, e in enumerate(encoded) if i not in chosen]
    valid = [e for i, e in enumerate(encoded) if i in chosen]
    counts["kept"] = len(molecules)
    seconds = time.perf_counter() - began
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "domain": "molecules",
        "source": source,
        "counts": {"read": counts["read"], "kept": counts["kept"], "train": len(train), "valid": len(valid),
                   "drops": {r: counts[r] for r in DROP_REASONS}},
        "vocabulary": list(vocab.tokens),
        "canonicalisation": "RDKit Chem.MolToSmiles (isomeric), de-duplicated",
        "split": {"by": "sha256(seed|canonical SMILES)", "seed": config.seed, "valid_fraction": config.valid_fraction},
        "settings": config.settings_dict(),
        "content_hash": _content_hash(train, valid, vocab),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(seconds, 2),
    }  # fmt: skip
    save_molecule_dataset(MoleculeDataset(train, valid, vocab, manifest), out)
    return MoleculeBuildReport(out, dict(counts), len(train), len(valid), seconds, manifest)


def _content_hash(train: Sequence[np.ndarray], valid: Sequence[np.ndarray], vocab: Vocabulary) -> str:
    h = hashlib.sha256("\x00".join(vocab.tokens).encode())
    for split in (train, valid):
        tokens, offsets = _flatten(split)
        h.update(offsets.tobytes())
        h.update(tokens.tobytes())
    return h.hexdigest()


def save_molecule_dataset(dataset: MoleculeDataset, path: str | os.PathLike[str]) -> Path:
    """Write ``dataset`` atomically to ``path`` (``.npz``) and its manifest beside it."""
    target = Path(path)
    train_tokens, train_offsets = _flatten(dataset.train)
    valid_tokens, valid_offsets = _flatten(dataset.valid)
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh, train_tokens=train_tokens, train_offsets=train_offsets, valid_tokens=valid_tokens,
            valid_offsets=valid_offsets, manifest=np.array(json.dumps(dataset.manifest)),
        )  # fmt: skip
        _make_readable(tmp)
    write_json_atomic(manifest_path(target), dataset.manifest)
    _make_readable(manifest_path(target))
    return target


def load_molecule_dataset(path: str | os.PathLike[str]) -> MoleculeDataset:
    """Read a dataset written by :func:`save_molecule_dataset`.

    Raises:
        DatasetError: missing, corrupt, not a molecule dataset, or of another format version.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(
            f"dataset {p} does not exist (build one with: rltuner data build --domain molecules)"
        )
    with p.open("rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            raise DatasetError(
                f"{p} is not a dataset file (expected an .npz written by `rltuner data build`)"
            )
    try:
        with np.load(p, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        manifest = json.loads(str(arrays["manifest"]))
    except Exception as exc:  # BadZipFile, KeyError, ValueError, JSON errors on truncated or foreign files
        raise DatasetError(f"{p} is not a readable molecule dataset ({type(exc).__name__}: {exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise DatasetError(f"{p} is not an rltuner molecule dataset (a melody dataset? use --domain music)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DatasetError(f"{p} has molecule dataset format {manifest.get('format_version')}; rebuild it")
    try:
        vocab = Vocabulary(tuple(str(t) for t in manifest["vocabulary"]))
    except (KeyError, TypeError, ConfigError) as exc:
        raise DatasetError(f"{p} has a corrupt vocabulary ({exc})") from None
    splits = []
    for name in ("train", "valid"):
        tokens, offsets = arrays.get(f"{name}_tokens"), arrays.get(f"{name}_offsets")
        ok = (
            tokens is not None and offsets is not None and tokens.dtype == np.int8 and offsets.dtype == np.int64
            and offsets.ndim == 1 and len(offsets) >= 1 and offsets[0] == 0 and offsets[-1] == len(tokens)
            and bool(np.all(np.diff(offsets) >= 0))
            and (tokens.size == 0 or (int(tokens.min()) >= 3 and int(tokens.max()) < len(vocab)))
        )  # fmt: skip
        if not ok:
            raise DatasetError(f"{p} is corrupt: the {name} split's tokens or offsets are inconsistent")
        splits.append(_unflatten(tokens, offsets))  # type: ignore[arg-type]
    return MoleculeDataset(splits[0], splits[1], vocab, manifest)


def default_molecule_dataset_path(config: MoleculeBuildConfig | None = None) -> Path:
    config = config or MoleculeBuildConfig()
    return cache_dir() / "datasets" / f"moses-b{BUILD_VERSION}-{config.settings_hash()}.npz"


def load_default_molecule_dataset(
    config: MoleculeBuildConfig | None = None, *, progress: bool = True
) -> MoleculeDataset:
    """The default MOSES dataset: built once into the cache (about 1-2 minutes), then loaded from there."""
    config = config or MoleculeBuildConfig()
    path = default_molecule_dataset_path(config)
    if path.exists():
        try:
            return load_molecule_dataset(path)
        except DatasetError:
            pass
    build_molecule_dataset(config, path, progress=progress)
    return load_molecule_dataset(path)
