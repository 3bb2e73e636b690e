"""SMILES tokens and the molecule vocabulary (``shared/spec/molecules.md``, "Sequences").

A token is one bracket atom (``[nH]``, ``[C@@H]``, ``[O-]``), one two-letter element written outside brackets
(``Cl``, ``Br``), one two-digit ring bond (``%10``), or else one character. ``"".join(tokenize(s)) == s`` for
every string, so decoding is exact.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from rltuner.errors import ConfigError

BOS = "<bos>"
EOS = "<eos>"
PAD = "<pad>"
SPECIAL_TOKENS = (PAD, BOS, EOS)  # ids 0, 1, 2 in every vocabulary
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
MAX_LENGTH = 100  # tokens per molecule, <eos> included; a longer string is truncated and invalid

# Order matters: brackets first, then the two-letter organic-subset elements, then ring bonds, then anything.
_TOKEN_RE = re.compile(r"(\[[^\[\]]*\]|Cl|Br|%\d{2}|.)", re.DOTALL)


def tokenize(smiles: str) -> list[str]:
    """Split a SMILES string into tokens; ``"".join(tokenize(s)) == s`` always holds."""
    return _TOKEN_RE.findall(smiles)


@dataclass(frozen=True)
class Vocabulary:
    """Token <-> id. Ids 0, 1, 2 are ``<pad>``, ``<bos>``, ``<eos>``; the rest are SMILES tokens, sorted."""

    tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.tokens[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
            raise ConfigError(f"a molecule vocabulary starts with {', '.join(SPECIAL_TOKENS)}")
        if len(set(self.tokens)) != len(self.tokens):
            raise ConfigError("a molecule vocabulary holds a token twice")
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    @classmethod
    def from_smiles(cls, smiles: Iterable[str]) -> Vocabulary:
        """The vocabulary of every token in ``smiles`` (plus the three special tokens)."""
        seen: set[str] = set()
        for s in smiles:
            seen.update(tokenize(s))
        return cls(SPECIAL_TOKENS + tuple(sorted(seen)))

    def __len__(self) -> int:
        return len(self.tokens)

    def index(self, token: str) -> int:
        try:
            return self._index[token]  # type: ignore[attr-defined,no-any-return]
        except KeyError:
            raise KeyError(f"token {token!r} is not in the vocabulary") from None

    def encode(self, smiles: str, *, bos: bool = True, eos: bool = True) -> np.ndarray:
        """SMILES -> int64 ids (``<bos>`` first and ``<eos>`` last by default).

        Raises:
            KeyError: a token outside the vocabulary.
        """
        ids = [self.index(t) for t in tokenize(smiles)]
        return np.asarray(([BOS_ID] if bos else []) + ids + ([EOS_ID] if eos else []), dtype=np.int64)

    def decode(self, ids: Sequence[int] | np.ndarray) -> tuple[str, bool]:
        """ids -> (SMILES before the first ``<eos>``, whether an ``<eos>`` was found).

        ``<bos>`` and ``<pad>`` are skipped; a sequence without ``<eos>`` was truncated.
        """
        out: list[str] = []
        for i in np.asarray(ids, dtype=np.int64).tolist():
            if i == EOS_ID:
                return "".join(out), True
            if i in (PAD_ID, BOS_ID) or not 0 <= i < len(self.tokens):
                continue
            out.append(self.tokens[i])
        return "".join(out), False
