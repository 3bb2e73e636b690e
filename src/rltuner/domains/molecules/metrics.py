"""MOSES evaluation metrics of generated molecules (``shared/spec/molecules.md``, "Evaluation").

Small pure functions over lists of SMILES strings, following the definitions of MOSES (Polykovskiy et al.
2020, "Molecular Sets (MOSES): A Benchmarking Platform for Molecular Generation Models",
https://arxiv.org/abs/1811.12823) and, where the paper and MOSES's code differ, its code, because the code
produced the published baselines (:data:`MOSES_BASELINES`). Generated strings may be anything: invalid,
empty, absurdly long. What each function does with them, and with an empty list, is in its docstring and in
``docs/molecules-metrics.md``.

A string is *valid* when the reward's :func:`~rltuner.domains.molecules.reward.parse_smiles` accepts it (RDKit
parses and sanitises it into a molecule with at least one atom; empty strings, strings with whitespace and
strings longer than :data:`MAX_SMILES_LENGTH` are invalid unparsed), so r_T and the evaluation agree on
validity. Fractions of nothing (no strings, no valid molecule) are NaN, never an exception.
:func:`moses_metrics` parses once and computes everything.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import importlib.metadata
import io
import math
import warnings
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt
from rdkit import Chem, DataStructs, rdBase
from rdkit.Chem import QED, Crippen, Descriptors, rdFingerprintGenerator
from rdkit.Chem.Scaffolds import MurckoScaffold

from rltuner.data.dataset import cache_dir
from rltuner.domains.molecules.corpus import INSTALL_HINT, moses_file, read_smiles_file
from rltuner.domains.molecules.reward import parse_smiles, synthetic_accessibility
from rltuner.errors import ConfigError, DatasetError
from rltuner.fileio import write_bytes_atomic

if TYPE_CHECKING:
    from fcd_torch import FCD

FloatArray = npt.NDArray[np.float64]
_T = TypeVar("_T")

MAX_SMILES_LENGTH = 1_000  # longer strings are invalid unparsed (as in the reward)
MORGAN_RADIUS = 2  # MOSES's fingerprint for IntDiv: Morgan, radius 2, 1,024 bits
MORGAN_BITS = 1_024
UNIQUE_AT = (1_000, 10_000)  # MOSES's unique@k
INTDIV_MAX_MOLECULES = 10_000  # IntDiv is O(N^2): larger sets are subsampled (seeded)
FCD_REFERENCE_SIZE = 10_000  # MOSES test molecules the default FCD reference uses (of 176,074)
FILTER_ATOMS = frozenset({"C", "N", "S", "O", "F", "Cl", "Br", "H"})
# MOSES's code (mol_passes_filters) rejects rings of 8 or more atoms, although its README says "cycles longer
# than 8 atoms"; we follow the code, which made the published Filters column.
FILTER_MAX_RING = 7
PROPERTY_NAMES = ("qed", "sa", "logp", "weight")

# The keys of moses_metrics(), always all present (NaN where not computed), in this order.
METRIC_KEYS = (
    "n_generated",
    "n_valid",
    "valid",
    *(f"unique@{k}" for k in UNIQUE_AT),
    "novelty",
    "IntDiv1",
    "IntDiv2",
    "scaffold_diversity",
    "filters",
    "FCD/Test",
    *(f"{name}_mean" for name in PROPERTY_NAMES),
)

# MOSES's published baselines: the means of the metrics table in the MOSES README
# (github.com/molecularsets/moses, commit dd7ed6a, June 2023), the results of Polykovskiy et al. 2020
# (30,000 samples per model; FCD/Test against MOSES's whole test set; IntDiv2 by MOSES's per-molecule power
# mean). Only the columns this module computes, under our keys; the README's ± over runs are left out.
MOSES_BASELINES: dict[str, dict[str, float]] = {
    "HMM": {"valid": 0.076, "unique@1000": 0.623, "unique@10000": 0.5671, "FCD/Test": 24.4661,
            "IntDiv1": 0.8466, "IntDiv2": 0.8104, "filters": 0.9024, "novelty": 0.9994},
    "NGram": {"valid": 0.2376, "unique@1000": 0.974, "unique@10000": 0.9217, "FCD/Test": 5.5069,
              "IntDiv1": 0.8738, "IntDiv2": 0.8644, "filters": 0.9582, "novelty": 0.9694},
    "Combinatorial": {"valid": 1.0, "unique@1000": 0.9983, "unique@10000": 0.9909, "FCD/Test": 4.2375,
                      "IntDiv1": 0.8732, "IntDiv2": 0.8666, "filters": 0.9557, "novelty": 0.9878},
    "CharRNN": {"valid": 0.9748, "unique@1000": 1.0, "unique@10000": 0.9994, "FCD/Test": 0.0732,
                "IntDiv1": 0.8562, "IntDiv2": 0.8503, "filters": 0.9943, "novelty": 0.8419},
    "AAE": {"valid": 0.9368, "unique@1000": 1.0, "unique@10000": 0.9973, "FCD/Test": 0.5555,
            "IntDiv1": 0.8557, "IntDiv2": 0.8499, "filters": 0.996, "novelty": 0.7931},
    "VAE": {"valid": 0.9767, "unique@1000": 1.0, "unique@10000": 0.9984, "FCD/Test": 0.099,
            "IntDiv1": 0.8558, "IntDiv2": 0.8498, "filters": 0.997, "novelty": 0.6949},
    "JTN-VAE": {"valid": 1.0, "unique@1000": 1.0, "unique@10000": 0.9996, "FCD/Test": 0.3954,
                "IntDiv1": 0.8551, "IntDiv2": 0.8493, "filters": 0.976, "novelty": 0.9143},
    "LatentGAN": {"valid": 0.8966, "unique@1000": 1.0, "unique@10000": 0.9968, "FCD/Test": 0.2968,
                  "IntDiv1": 0.8565, "IntDiv2": 0.8505, "filters": 0.9735, "novelty": 0.9498},
}  # fmt: skip

_FCD_CACHE_VERSION = 1  # bumped when the cached statistics change meaning, so old files are not reused


# ---------------------------------------------------------------------------------------------------------
# input checks and parsing


def _check_smiles(smiles: Iterable[str], name: str = "smiles") -> list[str]:
    """``smiles`` as a list, or a clear TypeError (a lone string would otherwise be read char by char)."""
    if isinstance(smiles, (str, bytes)):
        raise TypeError(f"{name} must be a list of SMILES strings, not one {type(smiles).__name__}")
    try:
        items = list(smiles)
    except TypeError:
        raise TypeError(f"{name} must be a list of SMILES strings, got {type(smiles).__name__}") from None
    for i, s in enumerate(items):
        if not isinstance(s, str):
            raise TypeError(f"{name}[{i}] is a {type(s).__name__}, not a SMILES string: {s!r}")
    return items


def _check_count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _mols(smiles: Sequence[str]) -> list[Chem.Mol | None]:
    # parse_smiles silences RDKit's log (BlockLogs: the caller's settings are restored afterwards).
    return [parse_smiles(s, max_length=MAX_SMILES_LENGTH) for s in smiles]


@dataclass(frozen=True)
class _Valid:
    """The valid molecules of a generated list, in input order (duplicates kept), parsed once."""

    n_generated: int
    mols: list[Chem.Mol]
    smiles: list[str]  # their canonical SMILES

    @property
    def n_valid(self) -> int:
        return len(self.mols)


def _valid(smiles: Iterable[str], name: str = "smiles") -> _Valid:
    items = _check_smiles(smiles, name)
    mols = [m for m in _mols(items) if m is not None]
    return _Valid(len(items), mols, [Chem.MolToSmiles(m) for m in mols])


def _fraction(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def _per_molecule(valid: _Valid, fn: Callable[[Chem.Mol], _T]) -> list[_T]:
    """``fn`` of each valid molecule, computed once per distinct canonical SMILES.

    Exact, as the canonical SMILES fixes the molecule; a tuned model that repeats itself costs less.
    """
    done: dict[str, _T] = {}
    out = []
    for smiles, mol in zip(valid.smiles, valid.mols, strict=True):
        if smiles not in done:
            done[smiles] = fn(mol)
        out.append(done[smiles])
    return out


# ---------------------------------------------------------------------------------------------------------
# validity, uniqueness, novelty


def canonical(smiles: Iterable[str]) -> list[str | None]:
    """RDKit's canonical (isomeric) SMILES of each string, None for an invalid one.

    Raises:
        TypeError: ``smiles`` is not a list of strings.
    """
    items = _check_smiles(smiles)
    return [None if m is None else Chem.MolToSmiles(m) for m in _mols(items)]


def fraction_valid(smiles: Iterable[str]) -> float:
    """The fraction of strings RDKit parses (MOSES "valid"); NaN for an empty list.

    Raises:
        TypeError: ``smiles`` is not a list of strings.
    """
    valid = _valid(smiles)
    return _fraction(valid.n_valid, valid.n_generated)


def _unique_at_k(valid: _Valid, k: int) -> float:
    first = valid.smiles[:k]
    return _fraction(len(set(first)), len(first))


def unique_at_k(smiles: Iterable[str], k: int) -> float:
    """MOSES unique@k: the fraction of distinct canonical SMILES among the first ``k`` valid molecules.

    Invalid strings are skipped, not counted. With fewer than ``k`` valid molecules all of them are used, as
    MOSES does (it only warns); :func:`moses_metrics` reports ``n_valid`` beside it so that a reader can tell.
    NaN when nothing is valid.

    Raises:
        TypeError: ``smiles`` is not a list of strings.
        ConfigError: ``k`` is not a positive integer.
    """
    k = _check_count(k, "k")
    return _unique_at_k(_valid(smiles), k)


def _check_train_set(train_set: Collection[str]) -> Collection[str]:
    if isinstance(train_set, (str, bytes)) or not isinstance(train_set, Iterable):
        raise TypeError(f"train_set must be a set of SMILES strings, got {type(train_set).__name__}")
    if not isinstance(train_set, (set, frozenset)):
        train_set = set(_check_smiles(train_set, "train_set"))
    elif any(not isinstance(s, str) for s in train_set):
        raise TypeError("train_set must hold only SMILES strings")
    return train_set


def _novelty(valid: _Valid, train_set: Collection[str]) -> float:
    distinct = set(valid.smiles)
    return _fraction(sum(s not in train_set for s in distinct), len(distinct))


def novelty(smiles: Iterable[str], train_set: Collection[str]) -> float:
    """MOSES novelty: the fraction of distinct valid canonical SMILES not in ``train_set``.

    ``train_set`` is compared as given: it must hold canonical SMILES of this RDKit version (the spec
    canonicalises the training corpus; :func:`canonical` does it). NaN when nothing is valid.

    Raises:
        TypeError: ``smiles`` or ``train_set`` does not hold strings.
    """
    train = _check_train_set(train_set)
    return _novelty(_valid(smiles), train)


# ---------------------------------------------------------------------------------------------------------
# internal diversity


@functools.cache
def _morgan() -> Any:
    return rdFingerprintGenerator.GetMorganGenerator(radius=MORGAN_RADIUS, fpSize=MORGAN_BITS)


def _check_p(p: int) -> int:
    if p not in (1, 2) or isinstance(p, bool):
        raise ConfigError(f"internal diversity is defined for p = 1 or 2, got {p!r}")
    return int(p)


def _internal_diversity(valid: _Valid, ps: Sequence[int], max_molecules: int, seed: int) -> dict[int, float]:
    """IntDiv_p for each p in ``ps`` in one pass over the similarity matrix.

    MOSES (its ``internal_diversity`` / ``average_agg_tanimoto``) takes every valid molecule, duplicates
    included, and computes ``1 - mean_i (mean_j T(i, j)^p)^(1/p)`` over the full N x N matrix, diagonal
    (T = 1) included. For p = 1 that is the spec's ``1 - mean T``; for p = 2 the power mean is taken per
    molecule before averaging, which is what the published IntDiv2 numbers measure. We compute the same
    thing over the distinct molecules, each weighted by its count, and only the upper triangle (T is
    symmetric), so duplicates and symmetry cost nothing.
    """
    if valid.n_valid == 0:
        return {p: math.nan for p in ps}
    # (Every atom sets a Morgan bit, so no valid molecule has an empty fingerprint, where RDKit's 0/0 = 0
    # and MOSES's = 1 would differ.)
    smiles = valid.smiles
    indices: Iterable[int] = range(valid.n_valid)
    if valid.n_valid > max_molecules:
        indices = np.sort(np.random.default_rng(seed).choice(valid.n_valid, max_molecules, replace=False))
    first: dict[str, int] = {}  # canonical SMILES -> index of its first molecule
    counts: Counter[str] = Counter()
    for i in indices:
        first.setdefault(smiles[i], int(i))
        counts[smiles[i]] += 1
    generator = _morgan()
    fps = [generator.GetFingerprint(valid.mols[i]) for i in first.values()]
    w = np.array([counts[s] for s in first], dtype=np.float64)  # (U,) multiplicities
    total = w.sum()
    row_sums = {p: np.zeros(len(fps)) for p in ps}  # sum_j w_j T(i, j)^p, per distinct molecule i
    for i, fp in enumerate(fps):
        t = np.asarray(DataStructs.BulkTanimotoSimilarity(fp, fps[i:]))  # T(i, j) for j >= i
        for p in ps:
            tp = t if p == 1 else t**p
            row_sums[p][i] += tp @ w[i:]
            row_sums[p][i + 1 :] += tp[1:] * w[i]
    return {p: float(1.0 - ((row_sums[p] / total) ** (1.0 / p)) @ w / total) for p in ps}


def internal_diversity(
    smiles: Iterable[str], p: int = 1, *, max_molecules: int = INTDIV_MAX_MOLECULES, seed: int = 0
) -> float:
    """MOSES IntDiv_p of the valid molecules: 1 minus the (power-)mean Tanimoto similarity of all pairs.

    Tanimoto on Morgan fingerprints (radius 2, 1,024 bits) over all N x N ordered pairs of the valid
    molecules, duplicates and the diagonal included, with MOSES's per-molecule power mean for p = 2 (see
    ``docs/molecules-metrics.md``). One molecule gives 0, identical molecules 0; NaN when nothing is valid.

    Args:
        smiles: generated strings.
        p: 1 or 2.
        max_molecules: with more valid molecules than this, a seeded uniform subsample of this many is used
            (the cost is quadratic).
        seed: the subsample's seed.

    Raises:
        TypeError: ``smiles`` is not a list of strings.
        ConfigError: ``p`` is not 1 or 2, or ``max_molecules`` is not a positive integer.
    """
    p = _check_p(p)
    max_molecules = _check_count(max_molecules, "max_molecules")
    return _internal_diversity(_valid(smiles), (p,), max_molecules, seed)[p]


# ---------------------------------------------------------------------------------------------------------
# scaffolds


def _scaffold(mol: Chem.Mol) -> str:
    try:
        return str(Chem.MolToSmiles(MurckoScaffold.GetScaffoldForMol(mol)))
    except (ValueError, RuntimeError):  # RDKit cannot cut this one: count it with the acyclic ones
        return ""


def _scaffold_diversity(valid: _Valid) -> float:
    return _fraction(len(set(_per_molecule(valid, _scaffold))), valid.n_valid)


def scaffold_diversity(smiles: Iterable[str]) -> float:
    """The number of distinct Bemis-Murcko scaffolds divided by the number of valid molecules.

    Duplicates count in the denominator (as in IntDiv), so 100 copies of one molecule score 0.01. Acyclic
    molecules all share the empty scaffold. Not a MOSES metric (MOSES's Scaf is a similarity to the test
    set's scaffolds). NaN when nothing is valid.

    Raises:
        TypeError: ``smiles`` is not a list of strings.
    """
    return _scaffold_diversity(_valid(smiles))


# ---------------------------------------------------------------------------------------------------------
# MOSES filters


def _molsets_file(relative: str) -> Path:
    """A data file of the ``molsets`` wheel (found without importing ``moses``: its dependencies are absent).

    For the filter lists, which ``corpus.moses_file`` (the dataset splits only) does not locate.
    """
    try:
        path = Path(str(importlib.metadata.distribution("molsets").locate_file(relative)))
    except importlib.metadata.PackageNotFoundError:
        raise DatasetError(
            f"MOSES's filter lists ship in the molsets wheel, which is missing: {INSTALL_HINT}"
        ) from None
    if not path.is_file():
        raise DatasetError(f"the molsets package lacks {relative} (looked at {path})")
    return path


@functools.cache
def _filter_patterns() -> tuple[Chem.Mol, ...]:
    """MOSES's medicinal-chemistry (MCF, 22) and PAINS (480) SMARTS, parsed once."""
    with open(_molsets_file("moses/metrics/mcf.csv"), newline="") as fh:
        smarts = [row["smarts"] for row in csv.DictReader(fh)]  # header: names,smarts
    with open(_molsets_file("moses/metrics/wehi_pains.csv"), newline="") as fh:
        # no header; column 0 is the SMARTS, padded with spaces after its closing quote
        smarts += [row[0].strip() for row in csv.reader(fh) if row]
    patterns = tuple(Chem.MolFromSmarts(s) for s in smarts)
    if any(p is None for p in patterns):
        raise DatasetError("a MOSES filter SMARTS does not parse with this RDKit version")
    return patterns


def _passes_filters(mol: Chem.Mol) -> bool:
    """MOSES's ``mol_passes_filters``: allowed atoms, no charge, no ring of 8+ atoms, no MCF/PAINS match."""
    if any(len(ring) > FILTER_MAX_RING for ring in mol.GetRingInfo().AtomRings()):
        return False
    for atom in mol.GetAtoms():
        if atom.GetFormalCharge() != 0 or atom.GetSymbol() not in FILTER_ATOMS:
            return False
    with_h = Chem.AddHs(mol)  # many PAINS patterns spell hydrogens out as [#1]
    if any(with_h.HasSubstructMatch(pattern) for pattern in _filter_patterns()):
        return False
    # MOSES's last check: the non-isomeric SMILES must parse again
    return parse_smiles(Chem.MolToSmiles(mol, isomericSmiles=False), max_length=MAX_SMILES_LENGTH) is not None


def _filters(valid: _Valid) -> float:
    with rdBase.BlockLogs():
        return _fraction(sum(_per_molecule(valid, _passes_filters)), valid.n_valid)


def filters_pass(smiles: Iterable[str]) -> float:
    """MOSES Filters: the fraction of valid molecules that pass MOSES's filters.

    A molecule passes when all its atoms are C, N, S, O, F, Cl, Br or H, none is charged, no ring has 8 or
    more atoms (MOSES's code), and it matches none of the 22 medicinal-chemistry and 480 PAINS SMARTS
    shipped with MOSES (``moses/metrics/mcf.csv``, ``wehi_pains.csv`` in the ``molsets`` wheel). NaN when
    nothing is valid.

    Raises:
        TypeError: ``smiles`` is not a list of strings.
        DatasetError: the ``molsets`` package or its filter files are missing.
    """
    return _filters(_valid(smiles))


# ---------------------------------------------------------------------------------------------------------
# properties


def _properties(valid: _Valid) -> dict[str, FloatArray]:
    def row(mol: Chem.Mol) -> tuple[float, float, float, float]:  # in PROPERTY_NAMES order
        try:
            return (
                QED.qed(mol),
                synthetic_accessibility(mol),
                Crippen.MolLogP(mol),  # type: ignore[attr-defined]
                Descriptors.MolWt(mol),  # type: ignore[attr-defined]
            )
        except (Chem.rdchem.MolSanitizeException, ValueError, RuntimeError):
            # parses, yet QED cannot re-sanitise it: NaN here (the reward counts such a string invalid)
            nan = float("nan")
            return (nan, nan, nan, nan)

    with rdBase.BlockLogs():
        table = np.asarray(_per_molecule(valid, row), dtype=np.float64).reshape(-1, len(PROPERTY_NAMES))
    return {name: table[:, j].copy() for j, name in enumerate(PROPERTY_NAMES)}


def properties(smiles: Iterable[str]) -> dict[str, FloatArray]:
    """QED, SA, logP and molecular weight of each valid molecule, in input order.

    Returns:
        ``{"qed", "sa", "logp", "weight"}`` -> (n_valid,) float64 arrays: ``QED.qed`` (0..1), the reward's
        ``synthetic_accessibility`` (RDKit Contrib's ``sascorer``, 1 easy .. 10 hard), ``Crippen.MolLogP``,
        ``Descriptors.MolWt`` (Da).
        Empty arrays when nothing is valid.

    Raises:
        TypeError: ``smiles`` is not a list of strings.
    """
    return _properties(_valid(smiles))


# ---------------------------------------------------------------------------------------------------------
# MOSES data


def moses_test_smiles(sample_size: int | None = FCD_REFERENCE_SIZE, seed: int = 0) -> list[str]:
    """MOSES's test set (176,074 SMILES), or a seeded uniform subsample of ``sample_size`` in file order.

    Raises:
        ConfigError: ``sample_size`` is not a positive integer or None.
        RLTunerError: the ``molsets`` package is missing.
    """
    if sample_size is not None:
        sample_size = _check_count(sample_size, "sample_size")
    smiles = read_smiles_file(moses_file("test"))
    if sample_size is None or sample_size >= len(smiles):
        return smiles
    keep = np.sort(np.random.default_rng(seed).choice(len(smiles), sample_size, replace=False))
    return [smiles[i] for i in keep]


def moses_train_smiles() -> list[str]:
    """MOSES's training set (1,584,663 SMILES as stored; 99.98% are RDKit 2026.09's canonical SMILES).

    Raises:
        RLTunerError: the ``molsets`` package is missing.
    """
    return read_smiles_file(moses_file("train"))


# ---------------------------------------------------------------------------------------------------------
# Fréchet ChemNet Distance


@functools.lru_cache(maxsize=2)
def _chemnet(device: str, n_jobs: int, batch_size: int) -> FCD:
    # fcd_torch bundles ChemNet_v0.13_pretrained.pt and loads it from its own folder: nothing is downloaded.
    from fcd_torch import FCD

    return FCD(device=device, n_jobs=n_jobs, batch_size=batch_size)


def _chemnet_stats(
    canonical_smiles: Sequence[str], device: str, n_jobs: int, batch_size: int
) -> tuple[FloatArray, FloatArray]:
    """Mean (512,) and covariance (512, 512) of ChemNet's penultimate activations of valid SMILES."""
    activations = _chemnet(device, n_jobs, batch_size).get_predictions(list(canonical_smiles))  # (N, 512)
    activations = np.asarray(activations, dtype=np.float64)
    return activations.mean(axis=0), np.cov(activations, rowvar=False)


def _reference_hash(reference: Sequence[str]) -> str:
    h = hashlib.sha256(f"rltuner-fcd-v{_FCD_CACHE_VERSION}\n".encode())
    for s in reference:
        h.update(s.encode())
        h.update(b"\n")
    return h.hexdigest()[:24]


def _fcd_cache_path(key: str) -> Path:
    return (
        cache_dir() / "fcd" / f"reference-{key}.npz"
    )  # the project's cache: $RLTUNER_CACHE or ~/.cache/rltuner


def _load_stats(path: Path) -> tuple[FloatArray, FloatArray] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
    except (OSError, KeyError, ValueError):
        return None  # missing or unreadable: recompute and overwrite
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        return None
    return mu, sigma


def fcd_reference_stats(
    reference_smiles: Iterable[str] | None = None,
    *,
    device: str = "cpu",
    n_jobs: int = 1,
    batch_size: int = 512,
    use_cache: bool = True,
) -> tuple[FloatArray, FloatArray]:
    """ChemNet activation statistics ``(mu, sigma)`` of a reference set, cached on disk.

    The cache file is ``$RLTUNER_CACHE/fcd/reference-<hash>.npz`` (default ``~/.cache/rltuner``), keyed by a
    hash of the reference list as given (order included), written atomically and read back with
    ``allow_pickle=False``. Invalid reference strings are dropped.

    Args:
        reference_smiles: the reference molecules; None means :func:`moses_test_smiles` ``()`` (10,000 of
            MOSES's test set, seed 0).
        device, n_jobs, batch_size: passed to ``fcd_torch.FCD`` (n_jobs: DataLoader workers).
        use_cache: read and write the cache.

    Returns:
        mu (512,) and sigma (512, 512), float64.

    Raises:
        TypeError: ``reference_smiles`` is not a list of strings.
        ValueError: fewer than 2 reference molecules are valid.
    """
    reference = moses_test_smiles() if reference_smiles is None else _check_smiles(reference_smiles)
    path = _fcd_cache_path(_reference_hash(reference)) if use_cache else None
    if path is not None and (cached := _load_stats(path)) is not None:
        return cached
    valid = _valid(reference, "reference_smiles")
    if valid.n_valid < 2:
        raise ValueError(f"FCD needs at least 2 valid reference molecules, got {valid.n_valid}")
    mu, sigma = _chemnet_stats(valid.smiles, device, n_jobs, batch_size)
    if path is not None:
        buffer = io.BytesIO()
        np.savez(buffer, mu=mu, sigma=sigma, n=np.int64(valid.n_valid))
        write_bytes_atomic(path, buffer.getvalue())
    return mu, sigma


def frechet_distance(mu1: FloatArray, sigma1: FloatArray, mu2: FloatArray, sigma2: FloatArray) -> float:
    """``||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``, by fcd_torch's stable routine."""
    from fcd_torch import calculate_frechet_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # scipy's sqrtm(disp=...) inside fcd_torch
        return float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2))


def _fcd(
    valid: _Valid, reference_stats: tuple[FloatArray, FloatArray], device: str, n_jobs: int, batch_size: int
) -> float:
    if valid.n_valid < 2:  # no covariance of fewer than 2 molecules
        return math.nan
    mu, sigma = _chemnet_stats(valid.smiles, device, n_jobs, batch_size)
    mu_ref, sigma_ref = reference_stats
    return frechet_distance(mu_ref, sigma_ref, mu, sigma)


def fcd_to_reference(
    smiles: Iterable[str],
    reference_smiles: Iterable[str] | None = None,
    *,
    reference_stats: tuple[FloatArray, FloatArray] | None = None,
    device: str = "cpu",
    n_jobs: int = 1,
    batch_size: int = 512,
) -> float:
    """Fréchet ChemNet Distance (Preuer et al. 2018) of the valid generated molecules to a reference.

    As MOSES: the valid molecules with duplicates, canonicalised, through ``fcd_torch``'s bundled ChemNet.
    FCD is biased by sample size; MOSES used 30,000 generated molecules.

    Args:
        smiles: generated strings.
        reference_smiles: the reference (None: 10,000 of MOSES's test set), ignored when ``reference_stats``
            is given; its statistics are cached (:func:`fcd_reference_stats`).
        reference_stats: ``(mu, sigma)`` from :func:`fcd_reference_stats`.
        device, n_jobs, batch_size: passed to ``fcd_torch.FCD``.

    Returns:
        The distance (>= 0, 0 for identical statistics); NaN with fewer than 2 valid generated molecules.

    Raises:
        TypeError: ``smiles`` or ``reference_smiles`` is not a list of strings.
        ValueError: fewer than 2 reference molecules are valid.
    """
    valid = _valid(smiles)
    if reference_stats is None:
        reference_stats = fcd_reference_stats(
            reference_smiles, device=device, n_jobs=n_jobs, batch_size=batch_size
        )
    return _fcd(valid, reference_stats, device, n_jobs, batch_size)


# ---------------------------------------------------------------------------------------------------------
# everything at once


def moses_metrics(
    generated: Iterable[str],
    *,
    train_set: Collection[str] | None = None,
    test_smiles: Iterable[str] | None = None,
    fcd: bool = True,
    intdiv_max_molecules: int = INTDIV_MAX_MOLECULES,
    test_sample_size: int | None = FCD_REFERENCE_SIZE,
    device: str = "cpu",
    n_jobs: int = 1,
    seed: int = 0,
) -> dict[str, float]:
    """Every metric of this module for one generated list, parsed once; the keys are :data:`METRIC_KEYS`.

    Args:
        generated: generated strings (invalid and empty ones included: they count against ``valid``).
        train_set: canonical training SMILES for ``novelty`` (NaN when None).
        test_smiles: the FCD reference (None: ``test_sample_size`` molecules of MOSES's test set, seed 0).
        fcd: compute ``FCD/Test`` (the slow one; NaN when False).
        intdiv_max_molecules: IntDiv subsample size.
        test_sample_size: MOSES test molecules of the default FCD reference (None: all 176,074; their
            statistics take ~8 minutes once on one CPU core, then come from the cache).
        device, n_jobs: for ChemNet.
        seed: the IntDiv subsample's seed.

    Returns:
        ``n_generated``, ``n_valid`` (counts, as floats), ``valid``, ``unique@1000``, ``unique@10000``,
        ``novelty``, ``IntDiv1``, ``IntDiv2``, ``scaffold_diversity``, ``filters``, ``FCD/Test``,
        ``qed_mean``, ``sa_mean``, ``logp_mean``, ``weight_mean``; NaN for what cannot be computed.

    Raises:
        TypeError: an input does not hold strings.
        ConfigError: a count setting is not a positive integer.
        RLTunerError: MOSES data (filter lists, default test set) is missing.
    """
    intdiv_max_molecules = _check_count(intdiv_max_molecules, "intdiv_max_molecules")
    if test_sample_size is not None:
        test_sample_size = _check_count(test_sample_size, "test_sample_size")
    train = None if train_set is None else _check_train_set(train_set)
    test = None if test_smiles is None else _check_smiles(test_smiles, "test_smiles")
    valid = _valid(generated, "generated")

    metrics: dict[str, float] = {
        "n_generated": float(valid.n_generated),
        "n_valid": float(valid.n_valid),
        "valid": _fraction(valid.n_valid, valid.n_generated),
    }
    for k in UNIQUE_AT:
        metrics[f"unique@{k}"] = _unique_at_k(valid, k)
    metrics["novelty"] = math.nan if train is None else _novelty(valid, train)
    intdiv = _internal_diversity(valid, (1, 2), intdiv_max_molecules, seed)
    metrics["IntDiv1"], metrics["IntDiv2"] = intdiv[1], intdiv[2]
    metrics["scaffold_diversity"] = _scaffold_diversity(valid)
    metrics["filters"] = _filters(valid)
    metrics["FCD/Test"] = math.nan
    if fcd and valid.n_valid >= 2:
        reference = moses_test_smiles(test_sample_size) if test is None else test
        stats = fcd_reference_stats(reference, device=device, n_jobs=n_jobs)
        metrics["FCD/Test"] = _fcd(valid, stats, device, n_jobs, batch_size=512)
    for name, values in _properties(valid).items():
        metrics[f"{name}_mean"] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
    return metrics
