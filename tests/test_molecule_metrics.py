"""MOSES metrics on tiny hand-built cases with exact answers (``rltuner.domains.molecules.metrics``)."""

import csv
import importlib.util
import math
import os

import numpy as np
import pytest
from rdkit import Chem, DataStructs, RDConfig
from rdkit.Chem import QED, Crippen, Descriptors, rdFingerprintGenerator

from rltuner.domains.molecules import metrics as M
from rltuner.errors import ConfigError

# 10 strings: 5 valid (two spellings of ethanol, two of benzene, acetic acid), 5 invalid (unclosed ring,
# empty, nonsense, over the length limit though it would parse, unclosed aromatic ring).
GENERATED = ["CCO", "OCC", "c1ccccc1", "C1=CC=CC=C1", "C1CC", "", "xyz", "CC(=O)O", "C" * 1001, "c1cc"]
CANONICAL = ["CCO", "CCO", "c1ccccc1", "c1ccccc1", None, None, None, "CC(=O)O", None, None]

PARACETAMOL = "CC(=O)Nc1ccc(O)cc1"
MOSES_TEST_MOLECULE = "CC1C2CCC(C2)C1CN(CCO)C(=O)c1ccc(Cl)cc1"  # the first of MOSES's test set


def tanimoto(a: str, b: str) -> float:
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)
    fa, fb = (gen.GetFingerprint(Chem.MolFromSmiles(s)) for s in (a, b))
    return float(DataStructs.TanimotoSimilarity(fa, fb))


# ---------------------------------------------------------------------------------------------------------
# validity, uniqueness, novelty


def test_canonical_and_validity():
    assert M.canonical(GENERATED) == CANONICAL
    assert M.fraction_valid(GENERATED) == 0.5
    assert M.fraction_valid(["C" * M.MAX_SMILES_LENGTH]) == 1.0  # at the limit it is parsed
    # as the reward's parse_smiles: RDKit would read "CCO" and take the rest as a name
    assert M.fraction_valid(["CCO ethanol", " CCO", "CCO\n"]) == 0.0


@pytest.mark.parametrize(
    ("k", "expected"),
    [(1, 1.0), (2, 0.5), (3, 2 / 3), (4, 0.5), (5, 0.6), (1000, 0.6)],  # 1000 > 5 valid: all 5 are used
)
def test_unique_at_k_counts_the_first_k_valid(k, expected):
    assert M.unique_at_k(GENERATED, k) == pytest.approx(expected)


def test_novelty_of_distinct_valid_molecules():
    # distinct valid: CCO, c1ccccc1, CC(=O)O
    assert M.novelty(GENERATED, {"CCO", "c1ccccc1"}) == pytest.approx(1 / 3)
    assert M.novelty(GENERATED, frozenset()) == 1.0
    assert M.novelty(GENERATED, ["CCO", "c1ccccc1", "CC(=O)O"]) == 0.0  # any collection of strings
    assert M.novelty(GENERATED, {"OCC"}) == 1.0  # the training set is compared as given: not canonical


def test_empty_and_all_invalid_inputs_give_nan_not_errors():
    for smiles in ([], ["", "xyz"]):
        assert math.isnan(M.unique_at_k(smiles, 10))
        assert math.isnan(M.novelty(smiles, {"CCO"}))
        assert math.isnan(M.internal_diversity(smiles))
        assert math.isnan(M.scaffold_diversity(smiles))
        assert math.isnan(M.filters_pass(smiles))
        assert math.isnan(M.fcd_to_reference(smiles, reference_stats=(np.zeros(512), np.eye(512))))
        assert all(values.shape == (0,) for values in M.properties(smiles).values())
    assert math.isnan(M.fraction_valid([]))
    assert M.fraction_valid(["", "xyz"]) == 0.0
    assert M.canonical([]) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda: M.fraction_valid("CCO"),  # one string, not a list
        lambda: M.fraction_valid(["CCO", 1]),
        lambda: M.fraction_valid(None),
        lambda: M.canonical([b"CCO"]),
        lambda: M.novelty(["CCO"], "CCO"),
        lambda: M.novelty(["CCO"], {"CCO", 3}),
        lambda: M.properties([None]),
    ],
)
def test_non_strings_are_type_errors(call):
    with pytest.raises(TypeError, match=r"SMILES|string"):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda: M.unique_at_k(["CCO"], 0),
        lambda: M.unique_at_k(["CCO"], True),
        lambda: M.internal_diversity(["CCO"], p=3),
        lambda: M.internal_diversity(["CCO"], max_molecules=0),
        lambda: M.moses_metrics(["CCO"], intdiv_max_molecules=-1, fcd=False),
    ],
)
def test_bad_settings_are_config_errors(call):
    with pytest.raises(ConfigError):
        call()


# ---------------------------------------------------------------------------------------------------------
# internal diversity


def test_intdiv_of_two_molecules_by_hand():
    t = tanimoto("CCO", "CCN")
    assert t == pytest.approx(1 / 3)  # 2 shared bits of 6 distinct
    # the 2 x 2 matrix [[1, t], [t, 1]], diagonal included
    assert M.internal_diversity(["CCO", "CCN"], p=1) == pytest.approx((1 - t) / 2)
    assert M.internal_diversity(["CCO", "CCN"], p=2) == pytest.approx(1 - math.sqrt((1 + t**2) / 2))


def test_intdiv2_is_mosess_per_molecule_power_mean_with_duplicates():
    smiles = ["CCO", "CCN", "c1ccccc1O", "CCO"]  # a duplicate counts as its own row and column
    T = np.array([[tanimoto(a, b) for b in smiles] for a in smiles])
    expected = 1 - np.mean(np.sqrt(np.mean(T**2, axis=1)))
    assert M.internal_diversity(smiles, p=2) == pytest.approx(expected, abs=1e-12)
    assert M.internal_diversity(smiles, p=1) == pytest.approx(1 - T.mean(), abs=1e-12)
    # the paper's global power mean is a different number: we follow the code that made the baselines
    assert abs(expected - (1 - np.sqrt(np.mean(T**2)))) > 1e-3


def test_intdiv_of_identical_molecules_is_zero():
    assert M.internal_diversity(["CCO"]) == 0.0
    assert M.internal_diversity(["CCO", "OCC", "C(O)C", "bad"], p=2) == pytest.approx(0.0, abs=1e-12)


def test_intdiv_subsample_is_seeded():
    smiles = ["CCO", "CCN", "c1ccccc1O", "CC(=O)O", "CCCl", "C1CCCCC1"]
    a = M.internal_diversity(smiles, max_molecules=3, seed=1)
    assert a == M.internal_diversity(smiles, max_molecules=3, seed=1)
    assert 0.0 <= a <= 1.0
    assert M.internal_diversity(smiles, max_molecules=6) == M.internal_diversity(smiles)


# ---------------------------------------------------------------------------------------------------------
# scaffolds and filters


def test_scaffold_diversity():
    # benzene scaffold x 2 (phenol, toluene), cyclohexane x 1, acyclic (empty scaffold) x 2, one invalid
    smiles = ["c1ccccc1O", "Cc1ccccc1", "OC1CCCCC1", "CCO", "CCCC", "C1CC"]
    assert M.scaffold_diversity(smiles) == pytest.approx(3 / 5)
    assert M.scaffold_diversity(["c1ccccc1O"] * 4) == 0.25  # duplicates count


@pytest.mark.parametrize(
    ("smiles", "passes"),
    [
        (PARACETAMOL, True),
        (MOSES_TEST_MOLECULE, True),
        ("C1CCCCCC1", True),  # a 7-ring is allowed
        ("CC(=O)Nc1ccc([O-])cc1", False),  # charged paracetamol
        ("C1CCCCCCCCC1", False),  # 10-membered ring
        ("C1CCCCCCC1", False),  # 8-membered: MOSES's code rejects rings of 8 or more
        ("Ic1ccc(NC(C)=O)cc1", False),  # iodine is not an allowed atom
        ("O=C1NC(=S)SC1=Cc1ccccc1", False),  # 5-benzylidene rhodanine: PAINS ene_rhod_A
        ("Nc1ccc(N)cc1", False),  # p-phenylenediamine: PAINS anil_no_alk
        ("Oc1ccccc1O", False),  # catechol: PAINS catechol_A
        ("O=C1C=CC(=O)C=C1", False),  # p-benzoquinone: PAINS quinone_A
    ],
)
def test_filters_on_single_molecules(smiles, passes):
    assert M.filters_pass([smiles]) == float(passes)


def test_filters_fraction_is_over_valid_molecules():
    assert M.filters_pass([PARACETAMOL, "C1CCCCCCCCC1", "bad", MOSES_TEST_MOLECULE, ""]) == pytest.approx(
        2 / 3
    )


def test_filter_lists_are_mosess():
    patterns = M._filter_patterns()
    assert len(patterns) == 22 + 480  # MCF first, then PAINS
    rhodanine = Chem.AddHs(Chem.MolFromSmiles("O=C1NC(=S)SC1=Cc1ccccc1"))
    assert [i for i, p in enumerate(patterns) if rhodanine.HasSubstructMatch(p)] == [22 + 474]  # ene_rhod_A
    chloromethyl = Chem.AddHs(Chem.MolFromSmiles("ClCc1ccccc1"))  # MCF4: [H]C([H])([#6])[F,Cl,Br,I]
    assert 3 in [i for i, p in enumerate(patterns) if chloromethyl.HasSubstructMatch(p)]
    assert M.filters_pass(["ClCc1ccccc1"]) == 0.0


# ---------------------------------------------------------------------------------------------------------
# properties


def _sascorer():
    path = os.path.join(RDConfig.RDContribDir, "SA_Score", "sascorer.py")
    spec = importlib.util.spec_from_file_location("sascorer_for_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_properties_match_direct_rdkit_calls():
    smiles = ["CCO", "bad", PARACETAMOL, MOSES_TEST_MOLECULE]
    got = M.properties(smiles)
    mols = [Chem.MolFromSmiles(s) for s in (smiles[0], smiles[2], smiles[3])]
    sascorer = _sascorer()
    assert set(got) == {"qed", "sa", "logp", "weight"}
    np.testing.assert_array_equal(got["qed"], [QED.qed(m) for m in mols])
    np.testing.assert_array_equal(got["sa"], [sascorer.calculateScore(m) for m in mols])
    np.testing.assert_array_equal(got["logp"], [Crippen.MolLogP(m) for m in mols])
    np.testing.assert_array_equal(got["weight"], [Descriptors.MolWt(m) for m in mols])
    assert got["weight"][0] == pytest.approx(46.069, abs=1e-3)


def test_sa_reproduces_rdkits_reference_scores():
    path = os.path.join(RDConfig.RDContribDir, "SA_Score", "data", "zim.100.txt")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))[:20]
    got = M.properties([row["smiles"] for row in rows])["sa"]
    np.testing.assert_allclose(got, [float(row["sa_score"]) for row in rows], atol=5e-3)


# ---------------------------------------------------------------------------------------------------------
# FCD


@pytest.fixture(scope="module")
def drug_like():
    return M.moses_test_smiles(40, seed=0)


ALKANES_AND_ALCOHOLS = ["C" * n for n in range(1, 21)] + ["C" * n + "O" for n in range(1, 21)]


def test_fcd_of_a_set_to_itself_is_zero_and_to_another_set_positive(drug_like):
    assert M.fcd_to_reference(drug_like, drug_like) == pytest.approx(0.0, abs=1e-2)
    assert M.fcd_to_reference(ALKANES_AND_ALCOHOLS, drug_like) > 5.0
    stats = M.fcd_reference_stats(drug_like)
    assert M.fcd_to_reference([*drug_like, "bad"], reference_stats=stats) == pytest.approx(0.0, abs=1e-2)


def test_fcd_needs_two_molecules():
    stats = (np.zeros(512), np.eye(512))
    assert math.isnan(M.fcd_to_reference(["CCO", "bad"], reference_stats=stats))
    with pytest.raises(ValueError, match="at least 2 valid reference"):
        M.fcd_reference_stats(["CCO", "bad"])


def test_fcd_reference_stats_are_cached(tmp_path, monkeypatch, drug_like):
    monkeypatch.setenv("RLTUNER_CACHE", str(tmp_path))
    mu, sigma = M.fcd_reference_stats(drug_like)
    assert mu.shape == (512,) and sigma.shape == (512, 512)
    [path] = (tmp_path / "fcd").glob("reference-*.npz")
    with np.load(path, allow_pickle=False) as data:
        np.testing.assert_array_equal(data["mu"], mu)
        assert int(data["n"]) == 40

    def no_chemnet(*args, **kwargs):
        raise AssertionError("ChemNet ran although the statistics were cached")

    chemnet_stats = M._chemnet_stats
    monkeypatch.setattr(M, "_chemnet_stats", no_chemnet)
    mu2, sigma2 = M.fcd_reference_stats(drug_like)
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(sigma2, sigma)
    with pytest.raises(AssertionError, match="ChemNet ran"):  # another reference is another key
        M.fcd_reference_stats(drug_like[:-1])
    monkeypatch.setattr(M, "_chemnet_stats", chemnet_stats)

    path.write_bytes(b"not an npz")  # a corrupt cache file is recomputed and replaced
    np.testing.assert_allclose(M.fcd_reference_stats(drug_like)[0], mu)
    assert M._load_stats(path) is not None


# ---------------------------------------------------------------------------------------------------------
# everything at once


def test_moses_metrics_keys_and_values(drug_like):
    got = M.moses_metrics(GENERATED, train_set={"CCO"}, test_smiles=drug_like)
    assert tuple(got) == M.METRIC_KEYS
    assert got["n_generated"] == 10 and got["n_valid"] == 5
    assert got["valid"] == 0.5
    assert got["unique@1000"] == got["unique@10000"] == pytest.approx(0.6)
    assert got["novelty"] == pytest.approx(2 / 3)
    assert got["IntDiv1"] == pytest.approx(M.internal_diversity(GENERATED, 1))
    assert got["IntDiv2"] == pytest.approx(M.internal_diversity(GENERATED, 2))
    assert got["scaffold_diversity"] == pytest.approx(M.scaffold_diversity(GENERATED))
    assert got["filters"] == pytest.approx(M.filters_pass(GENERATED))
    assert got["FCD/Test"] == pytest.approx(M.fcd_to_reference(GENERATED, drug_like))
    assert got["qed_mean"] == pytest.approx(M.properties(GENERATED)["qed"].mean())


def test_moses_metrics_of_nothing():
    got = M.moses_metrics([], fcd=True)  # no valid molecule: FCD is NaN without touching the test set
    assert tuple(got) == M.METRIC_KEYS
    assert got["n_generated"] == 0
    assert all(math.isnan(v) for k, v in got.items() if not k.startswith("n_"))


def test_baselines_use_our_keys():
    assert set(M.MOSES_BASELINES) >= {"CharRNN", "VAE", "AAE", "JTN-VAE"}
    for row in M.MOSES_BASELINES.values():
        assert set(row) <= set(M.METRIC_KEYS)
    assert M.MOSES_BASELINES["CharRNN"] == {
        "valid": 0.9748,
        "unique@1000": 1.0,
        "unique@10000": 0.9994,
        "FCD/Test": 0.0732,
        "IntDiv1": 0.8562,
        "IntDiv2": 0.8503,
        "filters": 0.9943,
        "novelty": 0.8419,
    }
