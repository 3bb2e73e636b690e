"""The molecule domain: tokens, corpus files, the dataset, the step-wise reward, tuning and the CLI."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("rdkit")

from rltuner.cli.main import cli, main
from rltuner.domains import DOMAINS, get_domain, tune_preset
from rltuner.domains.molecules.corpus import (
    MoleculeBuildConfig,
    build_molecule_dataset,
    load_molecule_dataset,
    moses_file,
    read_smiles_file,
)
from rltuner.domains.molecules.domain import SmilesReward, decode_batch, molecule_domain
from rltuner.domains.molecules.reward import MoleculeReward
from rltuner.domains.molecules.smiles import BOS_ID, EOS_ID, PAD_ID, Vocabulary, tokenize
from rltuner.errors import ConfigError, DatasetError
from rltuner.models.checkpoint import save_prior
from rltuner.models.prior import build_prior
from rltuner.rl.config import TuneConfig
from rltuner.rl.tuner import tune

SMILES = ["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "Clc1ccc(Br)cc1", "C[C@@H](N)C(=O)O", "c1cc[nH]c1",
          "C%10CCCCC%10", "CC(C)Cc1ccc(C(C)C(=O)O)cc1", "O=C(O)c1ccccc1", "CCN(CC)CC"]  # fmt: skip


def test_tokens_round_trip_and_special_tokens() -> None:
    assert tokenize("Clc1ccc(Br)cc1") == ["Cl", "c", "1", "c", "c", "c", "(", "Br", ")", "c", "c", "1"]
    assert tokenize("C[C@@H](N)C%10") == ["C", "[C@@H]", "(", "N", ")", "C", "%10"]
    for s in SMILES:
        assert "".join(tokenize(s)) == s
    vocab = Vocabulary.from_smiles(SMILES)
    assert vocab.tokens[:3] == ("<pad>", "<bos>", "<eos>")
    ids = vocab.encode("CCO")
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID
    assert vocab.decode(ids) == ("CCO", True)
    assert vocab.decode(ids[:-1]) == ("CCO", False)


def test_tokens_round_trip_on_moses() -> None:
    with gzip.open(moses_file("train"), "rt") as fh:
        lines = [line.strip() for line in itertools.islice(fh, 1, 50_001)]
    assert all("".join(tokenize(s)) == s for s in lines)


def test_read_smiles_files(tmp_path: Path) -> None:
    (tmp_path / "a.smi").write_text("smiles\nCCO ethanol\n\nc1ccccc1\n" + "C" * 20_000 + "\nCCN\n")
    from collections import Counter

    c: Counter[str] = Counter()
    assert read_smiles_file(tmp_path / "a.smi", c) == ["CCO", "c1ccccc1", "CCN"]
    assert c["empty"] == 1 and c["line_too_long"] == 1
    with gzip.open(tmp_path / "b.csv.gz", "wt") as fh:
        fh.write("id,Smiles\n1,CCO\n2,\n3,CCC\n")
    assert read_smiles_file(tmp_path / "b.csv.gz") == ["CCO", "CCC"]
    (tmp_path / "c.csv").write_text("id,name\n1,x\n")
    with pytest.raises(DatasetError, match="no SMILES column"):
        read_smiles_file(tmp_path / "c.csv")
    (tmp_path / "empty.smi").write_text("")
    with pytest.raises(DatasetError, match="holds no SMILES"):
        read_smiles_file(tmp_path / "empty.smi")
    (tmp_path / "junk.smi").write_bytes(bytes(range(256)) * 10)
    with pytest.raises(DatasetError, match="not a text file"):
        read_smiles_file(tmp_path / "junk.smi")
    with pytest.raises(DatasetError, match="does not exist"):
        read_smiles_file(tmp_path / "missing.smi")


def test_build_dataset_counts_every_drop(tmp_path: Path) -> None:
    src = tmp_path / "mols.smi"
    src.write_text("\n".join([*SMILES, "OCC", "C1CC", "not_a_smiles", "C" * 150]) + "\n")
    report = build_molecule_dataset(MoleculeBuildConfig(source=str(src), valid_fraction=0.2, jobs=1),
                                    tmp_path / "m.npz", progress=False)  # fmt: skip
    drops = report.manifest["counts"]["drops"]
    assert drops["duplicate"] == 1 and drops["invalid"] == 2 and drops["too_long"] == 1
    ds = load_molecule_dataset(tmp_path / "m.npz")
    assert len(ds.train) + len(ds.valid) == len(SMILES)
    from rdkit import Chem

    assert set(ds.smiles("train") + ds.smiles("valid")) == {
        Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in SMILES
    }
    seq = ds.sequences("train")[0]
    assert seq[0] == BOS_ID and seq[-1] == EOS_ID
    again = build_molecule_dataset(MoleculeBuildConfig(source=str(src), valid_fraction=0.2, jobs=2),
                                   tmp_path / "m2.npz", progress=False)  # fmt: skip
    assert again.manifest["content_hash"] == report.manifest["content_hash"]  # workers do not change it
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DatasetError):
        load_molecule_dataset(tmp_path / "bad.npz")
    with pytest.raises(ConfigError):
        MoleculeBuildConfig(valid_fraction=1.5).validate()


def _vocab() -> Vocabulary:
    return Vocabulary.from_smiles(SMILES)


def test_smiles_reward_pays_at_the_end_only() -> None:
    vocab = _vocab()
    scorer = MoleculeReward()
    reward = SmilesReward(vocab, scorer, max_length=5)
    state = reward.reset(3)
    # Episode 0 plays C C O <eos>; episode 1 never ends (truncated at step 4); episode 2 plays <bos> then <eos>.
    c, o = vocab.index("C"), vocab.index("O")
    script = [[c, c, o, EOS_ID, PAD_ID], [c, c, c, c, c], [BOS_ID, EOS_ID, PAD_ID, PAD_ID, PAD_ID]]
    rewards = np.stack([reward.step(state, np.array([row[t] for row in script])) for t in range(5)], 1)
    expected_cco = scorer(["CCO"])[0][0]
    assert rewards[0].tolist() == [0, 0, 0, pytest.approx(expected_cco), 0]
    assert rewards[1].tolist() == [0, 0, 0, 0, -1.0]  # truncated: invalid
    assert rewards[2].tolist() == [0, -1.0, 0, 0, 0]  # a <bos> inside: invalid
    assert len(reward.finished) == 3


def test_decode_batch_marks_broken_strings() -> None:
    vocab = _vocab()
    c = vocab.index("C")
    tokens = np.array([[c, c, EOS_ID, PAD_ID], [c, c, c, c], [c, BOS_ID, c, EOS_ID]])
    strings, broken = decode_batch(tokens, vocab)
    assert strings == ["CC", "CCCC", "CC"] and broken.tolist() == [False, True, True]


def _tiny_smiles_prior(tmp_path: Path) -> tuple[Path, Vocabulary]:
    vocab = _vocab()
    torch.manual_seed(0)
    model = build_prior({"arch": "lstm", "vocab_size": len(vocab), "hidden_size": 16})
    with torch.no_grad():  # make <eos> likely so episodes are short
        model.out.bias[EOS_ID] = 2.0
    path = save_prior(tmp_path / "tiny.safetensors", model, domain="molecules", vocabulary=list(vocab.tokens))
    return path, vocab


def test_molecule_tuning_runs_and_records_the_reward(tmp_path: Path) -> None:
    prior, _ = _tiny_smiles_prior(tmp_path)
    domain = molecule_domain(prior)
    assert domain.eos_token == EOS_ID and domain.reward_config is not None
    cfg = tune_preset("molecules", "fast", total_steps=600, n_envs=16, batch_size=400, train_every=20,
                      eval_every=0, eval_episodes=32, tensorboard=False, progress=False)  # fmt: skip
    assert cfg.exploration == "boltzmann"
    result = tune(cfg, domain, tmp_path / "run")
    assert result.env_steps >= 600 and result.metrics[-1]["mean_length"] < 100
    from rltuner.models.checkpoint import read_meta

    meta = read_meta(tmp_path / "run" / "model.safetensors")
    assert meta["reward"]["molecules"]["weights"]["qed"] == 2.0
    assert meta["domain_meta"]["vocabulary"][:3] == ["<pad>", "<bos>", "<eos>"]


def test_molecule_terms_reach_tensorboard_and_add_up(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rltuner.domains.molecules.reward import TERMS

    prior, _ = _tiny_smiles_prior(tmp_path)
    cfg = tune_preset("molecules", "fast", total_steps=600, n_envs=16, batch_size=400, train_every=20,
                      eval_every=0, eval_episodes=16, tensorboard=True, progress=False)  # fmt: skip
    tune(cfg, molecule_domain(prior), tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {f"reward/{t}" for t in TERMS} <= set(tags)
    # 16 episodes a round (under the 128 scored): the parts of a round add up to its mean task reward
    step = events.Scalars("round/mean_task_reward")[0].step
    parts = sum(next(e.value for e in events.Scalars(f"reward/{t}") if e.step == step) for t in TERMS)
    total = next(e.value for e in events.Scalars("round/mean_task_reward") if e.step == step)
    assert parts == pytest.approx(total, rel=1e-4, abs=1e-5)


def test_cli_generate_and_tune_molecules(tmp_path: Path) -> None:
    prior, vocab = _tiny_smiles_prior(tmp_path)
    runner = CliRunner()
    res = runner.invoke(cli, ["generate", "--domain", "molecules", "--model", str(prior), "-n", "20",
                              "--seed", "1", "--out", str(tmp_path / "gen")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "generate:" in res.stderr and "/20 " in res.stderr  # the sampling bar
    lines = (tmp_path / "gen" / "molecules.smi").read_text().split("\n")[:-1]
    assert len(lines) == 20 and all(set(tokenize(s)) <= set(vocab.tokens) for s in lines)
    again = runner.invoke(cli, ["generate", "--domain", "molecules", "--model", str(prior), "-n", "20",
                                "--seed", "1", "-q", "--out", str(tmp_path / "gen2")])  # fmt: skip
    assert (
        again.exit_code == 0 and (tmp_path / "gen2" / "molecules.smi").read_text() == "\n".join(lines) + "\n"
    )
    assert again.stderr == "" and "wrote 20 strings" in again.stdout  # -q: no bar, the same result lines
    res = runner.invoke(cli, ["tune", "--domain", "molecules", "--prior", str(prior), "-a", "g", "--steps", "300",
                              "--n-envs", "8", "--batch-size", "200", "--train-every", "30", "--quiet",
                              "--set", "tensorboard=false", "--set", "eval_episodes=16",
                              "--out", str(tmp_path / "run")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "per molecule" in res.output


def test_cli_molecule_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["data", "build", "--domain", "molecules", "--source", str(tmp_path / "none.smi")])
    assert exc.value.code == 2 and "does not exist" in capsys.readouterr().err
    music_prior = tmp_path / "music.safetensors"
    save_prior(music_prior, build_prior({"arch": "lstm", "vocab_size": 38, "hidden_size": 8}))
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--domain", "molecules", "--model", str(music_prior), "--out", str(tmp_path / "g")])
    assert exc.value.code == 2 and "not a SMILES model" in capsys.readouterr().err


def test_domain_table_drives_the_cli() -> None:
    assert set(DOMAINS) == {"music", "molecules"}
    with pytest.raises(ConfigError, match="unknown domain"):
        get_domain("proteins")
    res = CliRunner().invoke(cli, ["tune", "--help"])
    assert all(name in res.output for name in DOMAINS)
    assert isinstance(tune_preset("music"), TuneConfig)


def test_shipped_smiles_prior_loads() -> None:
    from rltuner.domains.molecules.domain import load_smiles_model

    model, vocab = load_smiles_model()
    assert model.vocab_size == len(vocab) and vocab.tokens[EOS_ID] == "<eos>"


@pytest.mark.slow
def test_cli_run_molecules_quick(tmp_path: Path) -> None:
    prior, _ = _tiny_smiles_prior(tmp_path)
    out = tmp_path / "run"
    args = ["run", "--domain", "molecules", "--quick", "--prior", str(prior), "--algorithms", "q,g", "--steps",
            "400", "--samples", "24", "--out", str(out)]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    for f in ("report.html", "evaluation.json", "prior.smi", "q.smi", "g.smi", "run.json", "figures/curves.png",
              "figures/properties.png", "tune/g/model.safetensors"):  # fmt: skip
        assert (out / f).is_file(), f
    html = (out / "report.html").read_text()
    assert "MOSES CharRNN" in html and "Valid" in html and "<svg" in html
    import json

    ev = json.loads((out / "evaluation.json").read_text())
    assert list(ev["metrics"]) == ["prior", "q", "g"] and ev["metrics"]["prior"]["mean_kl"] == 0.0
    assert len((out / "q.smi").read_text().split("\n")[:-1]) == 24


@pytest.mark.slow
def test_cli_run_molecules_several_seeds(tmp_path: Path) -> None:
    import json

    prior, _ = _tiny_smiles_prior(tmp_path)
    out = tmp_path / "run"
    args = ["run", "--domain", "molecules", "--quick", "--prior", str(prior), "--algorithms", "g", "--steps",
            "400", "--samples", "24", "--out", str(out)]  # fmt: skip
    res = CliRunner().invoke(cli, [*args, "--seeds", "2"])
    assert res.exit_code == 0, res.output
    stages = json.loads((out / "stages.json").read_text())
    assert list(stages) == ["tune/g/seed-0", "evaluate/seed-0", "tune/g/seed-1", "evaluate/seed-1", "figures"]
    per_seed = [json.loads((out / f"seed-{s}/evaluation.json").read_text())["metrics"]["g"] for s in (0, 1)]
    assert json.loads((out / "tune/g/seed-1/config.json").read_text())["seed"] == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["machine"]["cpu"]
    reward = summary["models"]["g"]["reward_mean"]
    assert reward["n"] == 2 and reward["mean"] == pytest.approx((per_seed[0]["reward_mean"] +
                                                                 per_seed[1]["reward_mean"]) / 2)  # fmt: skip
    assert f"{reward['mean']:.3f} ± {reward['sd']:.3f}" in (out / "table.md").read_text()
    assert "mean ± sd over seeds 0, 1" in (out / "report.html").read_text()
    # one seed more: only that seed runs (the figures show seed 0's models and are kept)
    assert CliRunner().invoke(cli, [*args, "--seeds", "3"]).exit_code == 0
    third = json.loads((out / "stages.json").read_text())
    assert {k: v for k, v in third.items() if k in stages} == stages
    assert set(third) - set(stages) == {"tune/g/seed-2", "evaluate/seed-2"}
