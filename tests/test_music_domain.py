"""The music domain's primer argument: one parser for ``tune`` and ``generate`` (``domains.music``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rltuner.domains.music import music_domain, parse_primer, primer_sampler
from rltuner.errors import ConfigError


@pytest.mark.parametrize(
    ("primer", "expected"),
    [
        (None, None), ("random", None), ("Random", None), ("C4", 14), (" F#3 ", 8), ("B5", 37), ("C3", 2),
        ("14", 14), (14, 14), (2, 2), ("tune.mid", Path("tune.mid")), ("a/b.MIDI", Path("a/b.MIDI")),
    ],
)  # fmt: skip
def test_parse_primer_forms(primer: object, expected: object) -> None:
    assert parse_primer(primer) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("primer", "message"), [("H9", "not a primer"), ("C9", "not a primer"), ("38", "outside"),
                                                 (-1, "outside"), ("", "not a primer")])  # fmt: skip
def test_parse_primer_refuses_the_rest(primer: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_primer(primer)  # type: ignore[arg-type]


def test_a_note_name_primes_every_melody_with_that_note() -> None:
    sampler, desc = primer_sampler("C4")
    assert desc == "fixed:14"
    assert np.array_equal(sampler(5, np.random.default_rng(0)), np.full(5, 14))
    domain = music_domain(primer="G4")
    assert domain.meta is not None and domain.meta["primer"] == "fixed:21"  # G4 = C4 (14) + 7 semitones
    assert set(domain.sample_primers(64, np.random.default_rng(0)).tolist()) == {21}
