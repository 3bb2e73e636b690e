"""The molecule reward r_T (``shared/spec/molecules.md``, "Reward r_T") against direct RDKit calls."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import time

import numpy as np
import pytest
from rdkit import Chem, RDConfig
from rdkit.Chem import QED, Crippen

from rltuner.config import apply_overrides, from_dict
from rltuner.domains.molecules.reward import (
    TERMS,
    MoleculeReward,
    MoleculeRewardConfig,
    MoleculeWeights,
    large_ring_count,
    longest_carbon_chain,
    parse_smiles,
    register_molecule_term,
    registered_molecule_terms,
    synthetic_accessibility,
    term_values,
    unregister_molecule_term,
)
from rltuner.errors import ConfigError

BENZENE = "c1ccccc1"
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
IBUPROFEN = "CC(C)Cc1ccc(C(C)C(=O)O)cc1"
CYCLOHEPTANE = "C1CCCCCC1"
TWO_LARGE_RINGS = "C1CCCCCC1C1CCCCCCC1"  # a 7-ring and an 8-ring
OCTANE = "CCCCCCCC"
HEPTANE_FROM_THE_MIDDLE = "C(CCC)CCC"  # no run of 6 C tokens as written; canonical: CCCCCCC
UNDECANE_FROM_THE_MIDDLE = "C(CCCCC)CCCCC"  # runs of 5 as written; canonical: CCCCCCCCCCC
GLYCINE_45 = "N" + "C(=O)CN" * 11  # 45 heavy atoms, no carbon run longer than 2
VALID = [
    BENZENE,
    ASPIRIN,
    IBUPROFEN,
    CYCLOHEPTANE,
    TWO_LARGE_RINGS,
    OCTANE,
    HEPTANE_FROM_THE_MIDDLE,
    GLYCINE_45,
]
INVALID = ["C1CC", "", "c1cccc1", "CC(C)(C)(C)(C)C", "CC O", "C\tC"]

SA_DIR = os.path.join(RDConfig.RDContribDir, "SA_Score")
ZIM_100 = os.path.join(SA_DIR, "data", "zim.100.txt")


def _reference_sascorer():
    """RDKit's sascorer loaded here on its own, so the module under test is checked, not re-used."""
    spec = importlib.util.spec_from_file_location(
        "test_reference_sascorer", os.path.join(SA_DIR, "sascorer.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sascorer():
    return _reference_sascorer()


@pytest.fixture(scope="module")
def reward():
    return MoleculeReward()


@pytest.fixture
def clean_registry():
    before = registered_molecule_terms()
    yield
    for name in registered_molecule_terms():
        if name not in before:
            unregister_molecule_term(name)


def expected_values(smiles: str, sascorer) -> dict[str, float]:
    """Every term by direct RDKit calls and the spec's table (default thresholds)."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or not smiles or any(ch.isspace() for ch in smiles):  # RDKit reads "CC O" as CC
        return {name: (-1.0 if name == "invalid" else 0.0) for name in TERMS}
    heavy = mol.GetNumHeavyAtoms()
    canonical = Chem.MolToSmiles(mol)
    return {
        "invalid": 0.0,
        "valid": 1.0,
        "qed": QED.qed(mol),
        "sa": (10 - sascorer.calculateScore(mol)) / 9,
        "logp": float(np.clip(Crippen.MolLogP(mol), -2, 5)) / 5,
        "large_rings": -float(sum(len(r) > 6 for r in mol.GetRingInfo().AtomRings())),
        "size": -1.0 if heavy < 10 or heavy > 40 else 0.0,
        "carbon_chains": -1.0 if "C" * 6 in re.sub(r"\[[^\]]*\]|Cl", " ", canonical) else 0.0,
    }


# ---------------------------------------------------------------------------------------- term by term
def test_every_term_equals_direct_rdkit_calls(sascorer):
    got = term_values(VALID + INVALID)
    assert list(got) == list(TERMS)
    for i, smiles in enumerate(VALID + INVALID):
        want = expected_values(smiles, sascorer)
        for name in TERMS:
            assert got[name][i] == want[name], (smiles, name)
    for values in got.values():
        assert values.dtype == np.float64 and values.shape == (len(VALID) + len(INVALID),)


@pytest.mark.parametrize(
    ("smiles", "large_rings", "size", "carbon_chains"),
    [
        (BENZENE, 0, -1, 0),  # 6 heavy atoms; a 6-ring is not large
        (ASPIRIN, 0, 0, 0),
        (CYCLOHEPTANE, -1, -1, -1),  # 7 atoms; its canonical SMILES holds C1CCCCCC1: six C tokens in a row
        (TWO_LARGE_RINGS, -2, 0, -1),  # -1 per large ring
        (OCTANE, 0, -1, -1),
        (HEPTANE_FROM_THE_MIDDLE, 0, -1, -1),  # the chain is read off the canonical CCCCCCC
        (UNDECANE_FROM_THE_MIDDLE, 0, 0, -1),
        (GLYCINE_45, 0, -1, 0),  # 45 heavy atoms
    ],
)
def test_penalties_by_hand(reward, smiles, large_rings, size, carbon_chains):
    values = reward.term_values([smiles])
    assert (values["large_rings"][0], values["size"][0], values["carbon_chains"][0]) == (
        large_rings,
        size,
        carbon_chains,
    )
    assert values["valid"][0] == 1 and values["invalid"][0] == 0


@pytest.mark.parametrize(
    ("repeats", "tail", "heavy", "size"),
    [(2, "", 9, -1), (2, "C", 10, 0), (9, "C(=O)C", 40, 0), (10, "", 41, -1)],
)
def test_size_bounds_are_inclusive(reward, repeats, tail, heavy, size):
    smiles = "N" + "C(=O)CN" * repeats + tail
    assert Chem.MolFromSmiles(smiles).GetNumHeavyAtoms() == heavy
    assert reward.term_values([smiles])["size"][0] == size


def test_logp_is_clipped_and_scaled(reward):
    # a long alkane is far above 5, a sugar far below -2
    values = reward.term_values(["C" * 30, "OCC(O)C(O)C(O)C(O)C(O)CO"])
    assert values["logp"].tolist() == [1.0, -0.4]


def test_carbon_chain_reads_the_generated_string_when_asked():
    generated = MoleculeReward(MoleculeRewardConfig(carbon_chain_smiles="generated"))
    values = generated.term_values([UNDECANE_FROM_THE_MIDDLE, "CCCCCCO", "C(O)CCCCC"])
    assert values["carbon_chains"].tolist() == [0.0, -1.0, 0.0]  # the last two are one molecule, hexanol


def test_longest_carbon_chain_counts_aliphatic_c_tokens_only():
    assert longest_carbon_chain("CCCCC[C@H](C)CCCl") == 5  # bracket atoms and Cl break the run
    assert longest_carbon_chain("c1ccccc1") == 0
    assert longest_carbon_chain("C=CC=CC=C") == 2  # bond symbols break it too
    assert longest_carbon_chain("") == 0


def test_large_ring_count_threshold():
    mol = Chem.MolFromSmiles(TWO_LARGE_RINGS)
    assert (large_ring_count(mol), large_ring_count(mol, 7), large_ring_count(mol, 8)) == (2, 1, 0)
    assert large_ring_count(Chem.MolFromSmiles("c1ccc2ccccc2c1")) == 0  # naphthalene: two 6-rings


# ---------------------------------------------------------------------------------------------- invalid
def test_invalid_strings_get_minus_one_and_no_other_term(reward):
    total, terms = reward(INVALID)
    assert total.tolist() == [-1.0] * len(INVALID)
    assert terms["invalid"].tolist() == [-1.0] * len(INVALID)
    for name in TERMS[1:]:
        assert not terms[name].any(), name


def test_truncated_is_invalid_whatever_the_string(reward):
    total, terms = reward([ASPIRIN, ASPIRIN], truncated=np.array([True, False]))
    assert total[0] == -1.0 and terms["qed"][0] == 0.0
    assert total[1] > 0 and terms["valid"][1] == 1.0


def test_whitespace_and_empty_are_invalid():
    # RDKit would read "CC" from "CC O" and take "O" as the molecule's name
    assert parse_smiles("CC O") is None and parse_smiles("") is None and parse_smiles("\n") is None
    assert Chem.MolToSmiles(parse_smiles("OCC")) == "CCO"


def test_a_100_kb_string_is_invalid_without_parsing(reward):
    huge = "C" * 100_000
    start = time.perf_counter()
    total, _ = reward([huge, "C(" * 50_000])
    assert time.perf_counter() - start < 0.5
    assert total.tolist() == [-1.0, -1.0]
    short = MoleculeReward(MoleculeRewardConfig(max_smiles_length=5))
    assert short.term_values(["CCCCO", "CCCCCO"])["invalid"].tolist() == [0.0, -1.0]


def test_rdkit_logging_is_silenced(reward, capfd):
    reward(["C1CC", "c1cccc1", "[H]", "CC(C)(C)(C)(C)C"])
    parse_smiles("C1CC(")
    assert capfd.readouterr().err == ""


def test_bad_arguments(reward):
    with pytest.raises(ValueError, match="shape"):
        reward([BENZENE, ASPIRIN], truncated=[True])
    with pytest.raises(TypeError):
        reward([BENZENE, None])  # type: ignore[list-item]
    total, terms = reward([])
    assert total.shape == (0,) and all(v.shape == (0,) for v in terms.values())


# ------------------------------------------------------------------------------------ synthetic access.
@pytest.mark.skipif(not os.path.exists(ZIM_100), reason=f"the rdkit wheel has no SA reference file {ZIM_100}")
def test_sa_reproduces_the_reference_scores_shipped_with_rdkit():
    with open(ZIM_100) as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    assert len(rows) == 100
    smiles = [row[0] for row in rows]
    reference = np.array([float(row[2]) for row in rows])
    ours = np.array([synthetic_accessibility(Chem.MolFromSmiles(s)) for s in smiles])
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-3)  # the file rounds to 3 decimals
    sa_term = MoleculeReward().term_values(smiles)["sa"]
    np.testing.assert_allclose(sa_term, (10 - reference) / 9, rtol=0, atol=1e-3 / 9)


# ------------------------------------------------------------------------------------------------- cache
def test_second_call_hits_the_cache_with_identical_values():
    reward = MoleculeReward()
    batch = VALID + INVALID
    total, terms = reward(batch)
    assert reward.cache_info().misses == len(batch) and reward.cache_info().hits == 0
    again, terms_again = reward(batch)
    info = reward.cache_info()
    assert info.hits == len(batch) and info.misses == len(batch)
    assert np.array_equal(total, again)
    assert all(np.array_equal(terms[n], terms_again[n]) for n in TERMS)


def test_another_spelling_hits_the_molecule_cache():
    reward = MoleculeReward()
    first = reward.term_values(["CCO"])
    second = reward.term_values(["OCC"])
    assert reward.cache_info()[:3] == (0, 1, 1)
    assert all(first[n] == second[n] for n in TERMS)
    assert reward.term_values(["OCC"])["qed"][0] == first["qed"][0] and reward.cache_info().hits == 1


def test_repeats_within_a_batch_are_scored_once(clean_registry):
    seen: list[int] = []
    register_molecule_term("calls", lambda mols, smiles: (seen.append(len(mols)), np.zeros(len(mols)))[1])
    reward = MoleculeReward()
    reward([ASPIRIN, BENZENE, ASPIRIN, ASPIRIN, "C1CC"])
    assert seen == [2]
    assert reward.cache_info()[:3] == (2, 0, 3)
    reward([ASPIRIN, BENZENE])
    assert seen == [2]  # all from the cache: the user term is not called again


def test_the_cache_is_bounded_lru():
    reward = MoleculeReward(MoleculeRewardConfig(cache_size=3))
    reward.term_values(["C", "CC", "CCC", "CCCC", "CCCCC"])
    assert reward.cache_info().size == 3
    reward.term_values(["CCCCC"])  # most recent: kept
    assert reward.cache_info().hits == 1
    reward.term_values(["C"])  # least recent: forgotten (by string and by molecule)
    assert reward.cache_info()[:3] == (1, 0, 6)
    reward.clear_cache()
    assert reward.cache_info() == (0, 0, 0, 0, 3)


def test_no_cache_gives_the_same_values(reward):
    uncached = MoleculeReward(MoleculeRewardConfig(cache_size=0))
    uncached([ASPIRIN])
    total, _ = uncached([ASPIRIN])
    assert uncached.cache_info()[:4] == (0, 0, 2, 0)
    assert total[0] == reward([ASPIRIN])[0][0]


# ----------------------------------------------------------------------------------------------- weights
def test_default_total_is_the_weighted_sum(reward, sascorer):
    total, terms = reward(VALID + INVALID)
    default = MoleculeWeights()
    for i, smiles in enumerate(VALID + INVALID):
        want = expected_values(smiles, sascorer)
        acc = 0.0
        for name in TERMS:
            weighted = getattr(default, name) * want[name]
            assert terms[name][i] == weighted
            acc += weighted
        assert total[i] == acc


def test_aspirin_by_hand(reward, sascorer):
    mol = Chem.MolFromSmiles(ASPIRIN)
    qed, sa, logp = QED.qed(mol), sascorer.calculateScore(mol), Crippen.MolLogP(mol)
    assert -2 < logp < 5
    assert reward([ASPIRIN])[0][0] == pytest.approx(1 + 2 * qed + (10 - sa) / 9 + 0.5 * logp / 5, abs=1e-12)


def test_weights_from_config_change_totals(reward):
    weights = MoleculeWeights(invalid=3.0, qed=0.0, sa=2.0, size=-1.0)
    other = MoleculeReward(MoleculeRewardConfig(weights=weights))
    values = reward.term_values([ASPIRIN, BENZENE, "C1CC"])
    total, terms = other([ASPIRIN, BENZENE, "C1CC"])
    assert not terms["qed"].any()
    np.testing.assert_array_equal(terms["sa"], 2.0 * values["sa"])
    np.testing.assert_array_equal(terms["size"], [0.0, 1.0, 0.0])  # benzene is small: -1 * -1
    assert total[2] == -3.0
    want = values["valid"] + 2 * values["sa"] + 0.5 * values["logp"] - values["size"]
    np.testing.assert_allclose(total[:2], want[:2], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "data",
    [
        {"weights": {"qed": "nan"}},
        {"weights": {"sa": float("inf")}},
        {"min_heavy_atoms": 50},
        {"min_heavy_atoms": -1},
        {"max_ring_size": 2},
        {"carbon_chain_length": 0},
        {"logp_min": 5.0},
        {"logp_scale": 0.0},
        {"logp_max": float("nan")},
        {"max_smiles_length": 0},
        {"cache_size": -1},
        {"carbon_chain_smiles": "both"},
        {"user_weights": ["qed=1"]},
        {"user_weights": ["mine=nan"]},
        {"user_weights": ["mine=1", "mine=2"]},
        {"user_weights": ["mine"]},
        {"user_weights": "mine=heavy"},
    ],
)
def test_nonsense_config_is_rejected(data):
    with pytest.raises(ConfigError):
        from_dict(MoleculeRewardConfig, data)


def test_nan_weight_is_rejected_at_construction():
    with pytest.raises(ConfigError, match="qed"):
        MoleculeReward(MoleculeRewardConfig(weights=MoleculeWeights(qed=math.nan)))


def test_config_round_trips_through_a_dict():
    cfg = MoleculeRewardConfig(weights=MoleculeWeights(qed=1.5), max_ring_size=7, user_weights=("mine=2",))
    data = cfg.to_dict()
    assert data["weights"]["qed"] == 1.5 and data["max_ring_size"] == 7
    assert from_dict(MoleculeRewardConfig, data) == cfg
    assert hash(cfg) == hash(from_dict(MoleculeRewardConfig, data))
    assert apply_overrides(cfg, {"user_weights": "mine=0.5,other=2"}).user_weight_map() == {
        "mine": 0.5,
        "other": 2.0,
    }


# ------------------------------------------------------------------------------------------- user terms
def _heavy_atoms(mols, smiles):
    return np.array([m.GetNumHeavyAtoms() / 10 for m in mols])


def test_a_registered_term_shows_up_and_counts(clean_registry, reward):
    register_molecule_term("heavy", _heavy_atoms, weight=0.25)
    assert "heavy" in registered_molecule_terms()
    assert "heavy" not in reward.terms  # built before: its terms are fixed
    mine = MoleculeReward()
    assert mine.terms == (*TERMS, "heavy") and mine.weights["heavy"] == 0.25
    batch = [ASPIRIN, "C1CC", BENZENE]
    base_total, _ = reward(batch)
    total, terms = mine(batch)
    assert terms["heavy"].tolist() == [0.25 * 1.3, 0.0, 0.25 * 0.6]  # invalid strings get 0
    np.testing.assert_array_equal(total, base_total + terms["heavy"])
    assert mine.term_values(batch)["heavy"].tolist() == [1.3, 0.0, 0.6]
    heavier = MoleculeReward(MoleculeRewardConfig(user_weights=("heavy=2",)))
    assert heavier(batch)[1]["heavy"].tolist() == [2.6, 0.0, 1.2]


def test_registry_errors(clean_registry):
    for name in ("qed", "total", "not an identifier"):
        with pytest.raises(ConfigError):
            register_molecule_term(name, _heavy_atoms)
    with pytest.raises(ConfigError):
        register_molecule_term("heavy", _heavy_atoms, weight=math.nan)
    register_molecule_term("heavy", _heavy_atoms)
    with pytest.raises(ConfigError, match="already"):
        register_molecule_term("heavy", _heavy_atoms)
    register_molecule_term("heavy", _heavy_atoms, weight=3.0, replace=True)
    assert MoleculeReward().weights["heavy"] == 3.0
    with pytest.raises(ConfigError, match="unregistered"):
        MoleculeReward(MoleculeRewardConfig(user_weights=("nobody=1",)))
    unregister_molecule_term("heavy")
    unregister_molecule_term("heavy")  # no error
    assert "heavy" not in registered_molecule_terms()


@pytest.mark.parametrize(
    "bad", [lambda mols, smiles: np.zeros(len(mols) + 1), lambda mols, smiles: np.full(len(mols), np.nan)]
)
def test_a_user_term_must_return_one_finite_value_per_molecule(clean_registry, bad):
    register_molecule_term("bad", bad)
    with pytest.raises(ConfigError, match="bad"):
        MoleculeReward()([ASPIRIN])


def test_a_molecule_whose_properties_fail_counts_as_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    from rdkit import Chem
    from rdkit.Chem import QED

    def fails(mol: object) -> float:
        raise Chem.rdchem.KekulizeException("Can't kekulize mol.")

    monkeypatch.setattr(QED, "qed", fails)
    total, terms = MoleculeReward()(["CCO", "c1ccccc1"])
    assert terms["invalid"].tolist() == [-1.0, -1.0] and total.tolist() == [-1.0, -1.0]
