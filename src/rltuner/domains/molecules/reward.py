"""The chemistry reward r_T of the molecule domain (``shared/spec/molecules.md``, "Reward r_T").

Sequence Tutor's second experiment tunes a SMILES generator on a reward of molecule properties. r_T is given
once, at an episode's last step, and is a weighted sum of terms (``TERMS``, in this order):

- ``invalid``: -1 for an empty, unparseable, too long or truncated string, and then no other term (weight 1);
- ``valid``: +1 (1);
- ``qed``: ``rdkit.Chem.QED.qed(mol)``, in [0, 1] (2);
- ``sa``: ``(10 - SA) / 9`` with SA from RDKit's ``sascorer``, 1 easy .. 10 hard (1);
- ``logp``: ``clip(Crippen.MolLogP(mol), -2, 5) / 5`` (0.5);
- ``large_rings``: -1 per ring of more than 6 atoms, ``mol.GetRingInfo().AtomRings()`` (0.5);
- ``size``: -1 if fewer than 10 or more than 40 heavy atoms (0.5);
- ``carbon_chains``: -1 if the (canonical) SMILES holds a run of 6 or more aliphatic ``C`` tokens (0.5);

then any user terms (:func:`register_molecule_term`). Every weight and threshold is a field of
:class:`MoleculeRewardConfig`. The penalties exist because QED/SA/logP alone are gamed by long carbon chains,
giant rings and tiny fragments.

:class:`MoleculeReward` scores a batch of strings and caches every result twice: by the string as generated
(a repeat costs one dict look-up) and by the canonical SMILES (the same molecule spelled differently skips
QED, SA and logP, ~85 % of the cost). ``docs/molecules-reward.md`` gives the choices the spec left open.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import numbers
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from rdkit import Chem, RDConfig, rdBase
from rdkit.Chem import QED, Crippen

from rltuner.config import field, to_dict
from rltuner.domains.molecules.smiles import tokenize
from rltuner.errors import ConfigError

FloatArray = npt.NDArray[np.float64]

TERMS: tuple[str, ...] = (
    "invalid",
    "valid",
    "qed",
    "sa",
    "logp",
    "large_rings",
    "size",
    "carbon_chains",
)
# The terms that depend on the molecule alone: what the canonical-SMILES cache holds.
_MOLECULE_TERMS: tuple[str, ...] = ("valid", "qed", "sa", "logp", "large_rings", "size")
_MOLECULE_COLUMNS = slice(TERMS.index(_MOLECULE_TERMS[0]), TERMS.index(_MOLECULE_TERMS[-1]) + 1)  # in a row
_INVALID_COLUMN = TERMS.index("invalid")
_CHAIN_COLUMN = TERMS.index("carbon_chains")

#: A user term: ``fn(mols, smiles) -> (n,) float64`` over the n valid molecules of a batch and their strings.
MoleculeTerm = Callable[[list[Chem.Mol], list[str]], np.ndarray]

_REGISTRY: dict[str, tuple[MoleculeTerm, float]] = {}

_CARBON = "C"  # the aliphatic carbon token; "Cl" and bracket atoms such as "[C@@H]" are tokens of their own


@dataclass(frozen=True)
class MoleculeWeights:
    """Multiplier of each built-in term's value (the spec's defaults; 0 switches a term off)."""

    invalid: float = field(
        1.0, "Weight of the invalid term (-1 for an empty, unparseable or truncated string)."
    )
    valid: float = field(1.0, "Weight of the valid term (+1 for a string RDKit parses).")
    qed: float = field(2.0, "Weight of QED, the quantitative estimate of drug-likeness in [0, 1].")
    sa: float = field(1.0, "Weight of synthetic accessibility, (10 - SA) / 9 in [0, 1].")
    logp: float = field(0.5, "Weight of the clipped, scaled Crippen logP.")
    large_rings: float = field(0.5, "Weight of the penalty of -1 per ring above max_ring_size atoms.")
    size: float = field(0.5, "Weight of the penalty of -1 for a heavy-atom count outside the allowed range.")
    carbon_chains: float = field(0.5, "Weight of the penalty of -1 for a long run of aliphatic C tokens.")


@dataclass(frozen=True)
class MoleculeRewardConfig:
    """Every constant of r_T. The defaults are the project's (``shared/spec/molecules.md``)."""

    weights: MoleculeWeights = dataclasses.field(
        default_factory=MoleculeWeights, metadata={"help": "Per-term multipliers (0 switches a term off)."}
    )
    user_weights: tuple[str, ...] = field(
        (), "Weights of registered user terms as name=weight entries, overriding their registered weight."
    )
    min_heavy_atoms: int = field(10, "Size term: fewer heavy atoms than this are penalised.")
    max_heavy_atoms: int = field(40, "Size term: more heavy atoms than this are penalised.")
    max_ring_size: int = field(6, "Large-rings term: each ring of more atoms than this is penalised.")
    carbon_chain_length: int = field(
        6, "Carbon-chains term: a run of this many aliphatic C tokens is penalised."
    )
    carbon_chain_smiles: Literal["canonical", "generated"] = field(
        "canonical",
        "Carbon-chains term: read the canonical SMILES (a chain cannot hide behind a branch-first spelling) "
        "or the string as generated.",
    )
    logp_min: float = field(-2.0, "logP term: Crippen logP is clipped from below to this.")
    logp_max: float = field(5.0, "logP term: Crippen logP is clipped from above to this.")
    logp_scale: float = field(5.0, "logP term: the clipped logP is divided by this.")
    max_smiles_length: int = field(
        1000,
        "Strings longer than this (characters) are invalid without being parsed, so none can stall RDKit.",
    )
    cache_size: int = field(
        200_000, "Entries in each of the two LRU caches (generated string, canonical SMILES); 0: no cache."
    )

    def validate(self) -> None:
        """Raise :class:`ConfigError` for nonsense values."""
        for name, value in dataclasses.asdict(self.weights).items():
            if not _is_finite_number(value):
                raise ConfigError(f"weight of term {name!r} must be a finite number, got {value!r}")
        self.user_weight_map()
        if not 0 <= self.min_heavy_atoms <= self.max_heavy_atoms:
            raise ConfigError(
                f"need 0 <= min_heavy_atoms <= max_heavy_atoms, got {self.min_heavy_atoms}, {self.max_heavy_atoms}"
            )
        if self.max_ring_size < 3:
            raise ConfigError(
                f"max_ring_size must be at least 3 (the smallest ring), got {self.max_ring_size}"
            )
        if self.carbon_chain_length < 1:
            raise ConfigError(f"carbon_chain_length must be at least 1, got {self.carbon_chain_length}")
        if self.carbon_chain_smiles not in ("canonical", "generated"):
            raise ConfigError(
                f"carbon_chain_smiles must be 'canonical' or 'generated', got {self.carbon_chain_smiles!r}"
            )
        if not (_is_finite_number(self.logp_min) and _is_finite_number(self.logp_max)):
            raise ConfigError(f"logp_min and logp_max must be finite, got {self.logp_min}, {self.logp_max}")
        if self.logp_min >= self.logp_max:
            raise ConfigError(f"logp_min must be below logp_max, got {self.logp_min} >= {self.logp_max}")
        if not _is_finite_number(self.logp_scale) or self.logp_scale <= 0:
            raise ConfigError(f"logp_scale must be a positive finite number, got {self.logp_scale}")
        if self.max_smiles_length < 1:
            raise ConfigError(f"max_smiles_length must be at least 1, got {self.max_smiles_length}")
        if self.cache_size < 0:
            raise ConfigError(f"cache_size must be >= 0, got {self.cache_size}")

    def to_dict(self) -> dict[str, object]:
        """The config as plain JSON-able dicts (what a run records)."""
        return to_dict(self)

    def user_weight_map(self) -> dict[str, float]:
        """``user_weights`` as a mapping: ``("mine=0.5",)`` -> ``{"mine": 0.5}``.

        Entries are strings rather than a dict so that the config stays hashable and a command-line
        override (``user_weights=mine=0.5,other=2``) reads as any other tuple setting.

        Raises:
            ConfigError: an entry that is not ``name=finite number``, a built-in term's name, or a repeat.
        """
        out: dict[str, float] = {}
        for entry in self.user_weights:
            name, sep, text = str(entry).partition("=")
            name = name.strip()
            if not sep or not name.isidentifier() or name in TERMS or name == "total" or name in out:
                raise ConfigError(
                    f"user_weights entry {entry!r} must be name=weight, once per user term (not a built-in term)"
                )
            try:
                value = float(text)
            except ValueError:
                raise ConfigError(f"user_weights entry {entry!r}: {text!r} is not a number") from None
            if not math.isfinite(value):
                raise ConfigError(f"weight of user term {name!r} must be a finite number, got {value}")
            out[name] = value
        return out


def _is_finite_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


# ------------------------------------------------------------------------------------------------ user terms
def register_molecule_term(
    name: str, fn: MoleculeTerm, weight: float = 1.0, *, replace: bool = False
) -> None:
    """Add a user term to r_T; rewards built after the call (:class:`MoleculeReward`) include it.

    Args:
        name: the term's key in the per-term output (an identifier, not one of ``TERMS``, not ``"total"``).
        fn: ``fn(mols, smiles) -> (n,) float64``, called once per batch on the n valid molecules not yet in
            the cache (``mols`` RDKit molecules, read-only; ``smiles`` the strings as generated). Invalid
            strings get 0. It must be a pure function of the molecule: results are cached.
        weight: default multiplier of the term's value (``MoleculeRewardConfig.user_weights`` overrides it).
        replace: allow replacing a term of the same name.

    Raises:
        ConfigError: a bad name or weight, ``fn`` not callable, or the name is taken and ``replace`` is False.
    """
    if not isinstance(name, str) or not name.isidentifier() or name in TERMS or name == "total":
        raise ConfigError(f"term name {name!r} must be an identifier other than the built-in term names")
    if name in _REGISTRY and not replace:
        raise ConfigError(f"a term named {name!r} is already registered (pass replace=True to replace it)")
    if not callable(fn):
        raise ConfigError(f"term {name!r} must be a function")
    if not _is_finite_number(weight):
        raise ConfigError(f"weight of term {name!r} must be a finite number, got {weight!r}")
    _REGISTRY[name] = (fn, float(weight))


def unregister_molecule_term(name: str) -> None:
    """Remove a user term (no error if it is not registered)."""
    _REGISTRY.pop(name, None)


def registered_molecule_terms() -> tuple[str, ...]:
    """Names of the user terms, in the order they are summed (after the built-in ``TERMS``)."""
    return tuple(_REGISTRY)


# ------------------------------------------------------------------------------------------ single measures
@functools.cache
def _sascorer() -> ModuleType:
    """RDKit's own ``sascorer`` (Ertl & Schuffenhauer 2009), from the Contrib folder of the rdkit wheel.

    It is not an importable package, so it is loaded from its file, once; its fragment table (~0.5 s) is
    read here rather than on the first molecule, so that no batch pays it unannounced.
    """
    path = os.path.join(RDConfig.RDContribDir, "SA_Score", "sascorer.py")
    spec = importlib.util.spec_from_file_location("rltuner_rdkit_sascorer", path)
    if spec is None or spec.loader is None or not os.path.exists(path):
        raise ImportError(f"RDKit's SA scorer is missing (looked for {path}); reinstall rdkit")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.readFragmentScores()
    return module


def parse_smiles(smiles: str, *, max_length: int = 1000) -> Chem.Mol | None:
    """The molecule of a SMILES string, or None when r_T counts the string as invalid.

    Invalid: empty, longer than ``max_length`` characters (not parsed at all), holding whitespace (RDKit would
    read the part before it and take the rest as a name), unparseable or unsanitizable, or without atoms.
    RDKit's log is silenced while parsing: a policy early in tuning writes thousands of invalid strings.

    Args:
        smiles: one string.
        max_length: the longest string that is parsed.

    Returns:
        The sanitized molecule, or None.
    """
    if not smiles or len(smiles) > max_length or any(ch.isspace() for ch in smiles):
        return None
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    return mol


def synthetic_accessibility(mol: Chem.Mol) -> float:
    """The SA score of a molecule, 1 (easy to make) .. 10 (hard), by RDKit's ``sascorer``.

    Raises:
        ImportError: the rdkit installation lacks ``Contrib/SA_Score``.
    """
    with rdBase.BlockLogs():
        return float(_sascorer().calculateScore(mol))


def large_ring_count(mol: Chem.Mol, max_ring_size: int = 6) -> int:
    """Number of rings (RDKit's smallest set, ``AtomRings()``) with more than ``max_ring_size`` atoms."""
    return sum(len(ring) > max_ring_size for ring in mol.GetRingInfo().AtomRings())


def longest_carbon_chain(smiles: str) -> int:
    """Longest run of consecutive aliphatic ``C`` tokens (``tokenize``) in a SMILES string.

    Anything between two ``C`` tokens breaks the run: a branch, a bond symbol, a ring-bond digit, another atom.
    """
    longest = run = 0
    for token in tokenize(smiles):
        run = run + 1 if token == _CARBON else 0
        longest = max(longest, run)
    return longest


# ---------------------------------------------------------------------------------------------------- cache
class CacheInfo(NamedTuple):
    """What :class:`MoleculeReward`'s caches did since they were built or cleared.

    Attributes:
        hits: strings found under the string itself (a repeat; also a repeat within one batch).
        canonical_hits: strings not seen before whose molecule was (another spelling): QED and SA skipped.
        misses: strings parsed and scored from nothing (invalid ones included).
        size: entries in the string cache now.
        maxsize: bound of each cache.
    """

    hits: int
    canonical_hits: int
    misses: int
    size: int
    maxsize: int


class _LRUCache:
    """A bounded mapping that forgets the least recently used entry first."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._data: OrderedDict[str, FloatArray] = OrderedDict()

    def get(self, key: str) -> FloatArray | None:
        row = self._data.get(key)
        if row is not None:
            self._data.move_to_end(key)
        return row

    def put(self, key: str, row: FloatArray) -> None:
        if self.maxsize == 0:
            return
        self._data[key] = row
        self._data.move_to_end(key)
        if len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()


# --------------------------------------------------------------------------------------------------- reward
class MoleculeReward:
    """r_T of a batch of SMILES strings, cached, with the value of every term.

    The user terms registered when it is built (:func:`register_molecule_term`) take part, after ``TERMS``.

    Args:
        config: weights and thresholds (default: the spec's).

    Attributes:
        terms: the term names, in summation order (``TERMS`` + user terms).
        weights: term name -> the multiplier in use.

    Raises:
        ConfigError: an invalid config, or a name in ``config.user_weights`` that is not a registered term.
        ImportError: the rdkit installation lacks ``Contrib/SA_Score``.
    """

    def __init__(self, config: MoleculeRewardConfig | None = None):
        self.config = config if config is not None else MoleculeRewardConfig()
        self.config.validate()
        cfg = self.config
        self.user_terms: tuple[tuple[str, MoleculeTerm], ...] = tuple(
            (n, f) for n, (f, _) in _REGISTRY.items()
        )
        self.terms: tuple[str, ...] = TERMS + tuple(n for n, _ in self.user_terms)
        user_weights = cfg.user_weight_map()
        unknown = set(user_weights) - set(_REGISTRY)
        if unknown:
            raise ConfigError(
                f"user_weights names unregistered term(s) {', '.join(sorted(unknown))}; "
                f"registered: {', '.join(_REGISTRY) or 'none'}"
            )
        merged = dataclasses.asdict(cfg.weights) | {n: w for n, (_, w) in _REGISTRY.items()} | user_weights
        self.weights: dict[str, float] = {name: float(merged[name]) for name in self.terms}
        self._weight_vector = np.array([self.weights[name] for name in self.terms])  # (K,)
        self._invalid_row = np.zeros(len(self.terms))
        self._invalid_row[_INVALID_COLUMN] = -1.0  # and no other term
        self._invalid_row.flags.writeable = False
        self._by_string = _LRUCache(cfg.cache_size)  # generated string -> (K,) every term's value
        self._by_molecule = _LRUCache(cfg.cache_size)  # canonical SMILES -> (len(_MOLECULE_TERMS),)
        self._hits = self._canonical_hits = self._misses = 0
        _sascorer()  # fail at construction, not in the middle of tuning

    def __call__(
        self, smiles: Sequence[str], truncated: npt.ArrayLike | None = None
    ) -> tuple[FloatArray, dict[str, FloatArray]]:
        """r_T of N strings.

        Args:
            smiles: N strings (the tokens before ``<eos>``, joined).
            truncated: (N,) bool, True where the episode hit the maximum length without ``<eos>`` (invalid
                whatever the string); None: nothing truncated.

        Returns:
            ``(total, terms)``: total (N,) float64 r_T (unscaled: not yet divided by the tuner's ``c``); terms
            maps each name of ``self.terms`` to its (N,) weighted value; they sum, in order, to the total.

        Raises:
            TypeError: an element of ``smiles`` is not a string.
            ValueError: ``truncated`` is not of shape (N,).
        """
        values = self._values(smiles, truncated)
        weighted = values * self._weight_vector  # (N, K)
        terms = {name: np.ascontiguousarray(weighted[:, k]) for k, name in enumerate(self.terms)}
        total = np.zeros(values.shape[0])
        for k in range(len(self.terms)):  # in term order, so the parts add up to the total exactly
            total = total + weighted[:, k]
        return total, terms

    def term_values(
        self, smiles: Sequence[str], truncated: npt.ArrayLike | None = None
    ) -> dict[str, FloatArray]:
        """Each term's unweighted (N,) float64 value; arguments and errors as for calling the reward."""
        values = self._values(smiles, truncated)
        return {name: np.ascontiguousarray(values[:, k]) for k, name in enumerate(self.terms)}

    def cache_info(self) -> CacheInfo:
        """Hit and miss counts and the size of the caches."""
        return CacheInfo(
            self._hits, self._canonical_hits, self._misses, len(self._by_string), self.config.cache_size
        )

    def clear_cache(self) -> None:
        """Empty both caches and reset the counts."""
        self._by_string.clear()
        self._by_molecule.clear()
        self._hits = self._canonical_hits = self._misses = 0

    def _values(self, smiles: Sequence[str], truncated: npt.ArrayLike | None) -> FloatArray:
        """(N, K) unweighted values of every term, from the caches where possible."""
        strings = list(smiles)
        for s in strings:
            if not isinstance(s, str):
                raise TypeError(f"SMILES must be strings, got {type(s).__name__}")
        n = len(strings)
        cut = np.zeros(n, dtype=bool) if truncated is None else np.asarray(truncated, dtype=bool)
        if cut.shape != (n,):
            raise ValueError(f"truncated must have shape ({n},), got {cut.shape}")
        values = np.zeros((n, len(self.terms)))
        pending: dict[str, list[int]] = {}  # strings to score -> their rows (a batch may repeat a string)
        for i, s in enumerate(strings):
            if cut[i] or len(s) > self.config.max_smiles_length:
                values[i] = self._invalid_row  # not cached: a truncated string may be fine on its own
                continue
            row = self._by_string.get(s)
            if row is not None:
                values[i] = row
                self._hits += 1
            elif s in pending:
                pending[s].append(i)
                self._hits += 1
            else:
                pending[s] = [i]
        if pending:
            for s, row in zip(pending, self._score_new(list(pending)), strict=True):
                values[pending[s]] = row
                self._by_string.put(s, row)
        return values

    def _score_new(self, strings: list[str]) -> list[FloatArray]:
        """(K,) values of each string not in the string cache, in order."""
        cfg = self.config
        rows: list[FloatArray] = []
        valid: list[int] = []  # positions in ``strings`` of the valid ones, for the user terms
        mols: list[Chem.Mol] = []
        with rdBase.BlockLogs():  # QED and SA can warn too (a lone [H], ...)
            for s in strings:
                mol = parse_smiles(s, max_length=cfg.max_smiles_length)
                if mol is None:
                    rows.append(self._invalid_row)
                    self._misses += 1
                    continue
                canonical = Chem.MolToSmiles(mol)
                molecule_row = self._by_molecule.get(canonical)
                if molecule_row is None:
                    try:
                        molecule_row = self._molecule_values(mol)
                    except (Chem.rdchem.MolSanitizeException, ValueError, RuntimeError):
                        # parses, yet a property fails on it (QED re-sanitises without hydrogens and can
                        # fail to kekulize): what RDKit cannot describe counts as invalid
                        rows.append(self._invalid_row)
                        self._misses += 1
                        continue
                    self._by_molecule.put(canonical, molecule_row)
                    self._misses += 1
                else:
                    self._canonical_hits += 1
                chain_smiles = canonical if cfg.carbon_chain_smiles == "canonical" else s
                chain = -1.0 if longest_carbon_chain(chain_smiles) >= cfg.carbon_chain_length else 0.0
                row = np.zeros(len(self.terms))
                row[_MOLECULE_COLUMNS] = molecule_row
                row[_CHAIN_COLUMN] = chain
                rows.append(row)
                valid.append(len(rows) - 1)
                mols.append(mol)
            if valid and self.user_terms:
                valid_strings = [strings[j] for j in valid]
                for k, (name, fn) in enumerate(self.user_terms, start=len(TERMS)):
                    out = np.asarray(fn(mols, valid_strings), dtype=np.float64)
                    if out.shape != (len(valid),):
                        raise ConfigError(
                            f"term {name!r} returned shape {out.shape}, expected ({len(valid)},)"
                        )
                    if not np.isfinite(out).all():
                        raise ConfigError(f"term {name!r} returned a non-finite value")
                    for j, value in zip(valid, out.tolist(), strict=True):
                        rows[j][k] = value
        for row in rows:
            row.flags.writeable = False  # rows are shared with the caches
        return rows

    def _molecule_values(self, mol: Chem.Mol) -> FloatArray:
        """(len(_MOLECULE_TERMS),) the terms that depend on the molecule alone (the expensive ones)."""
        cfg = self.config
        heavy = mol.GetNumHeavyAtoms()
        logp = Crippen.MolLogP(mol)  # type: ignore[attr-defined]  # a lambda alias RDKit's stubs do not list
        row = np.array(
            [
                1.0,
                float(QED.qed(mol)),
                (10.0 - synthetic_accessibility(mol)) / 9.0,
                float(np.clip(logp, cfg.logp_min, cfg.logp_max)) / cfg.logp_scale,
                float(-large_ring_count(mol, cfg.max_ring_size)),  # negated as an int: 0, never -0.0
                -1.0 if heavy < cfg.min_heavy_atoms or heavy > cfg.max_heavy_atoms else 0.0,
            ]
        )
        row.flags.writeable = False
        return row


def term_values(
    smiles: Sequence[str],
    truncated: npt.ArrayLike | None = None,
    *,
    config: MoleculeRewardConfig | None = None,
) -> dict[str, FloatArray]:
    """Each term's unweighted value for N strings, without a cache kept between calls.

    Args:
        smiles: N strings.
        truncated: (N,) bool, True where the episode was truncated; None: none was.
        config: thresholds (default: the spec's); the weights play no part.

    Returns:
        term name (``TERMS``, then registered user terms) -> (N,) float64 value.

    Raises:
        ConfigError: an invalid config.
        TypeError: an element of ``smiles`` is not a string.
        ValueError: ``truncated`` is not of shape (N,).
    """
    return MoleculeReward(config).term_values(smiles, truncated)
