"""`rltuner pretrain` and `rltuner generate` end to end on tiny data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rltuner.cli.main import cli, main
from rltuner.data.dataset import FORMAT_NAME, FORMAT_VERSION, MelodyDataset, save_dataset
from rltuner.models.checkpoint import load_prior


def _tiny_dataset(path: Path) -> Path:
    rng = np.random.default_rng(0)
    mels = [
        np.array([c for p in range(s, s + 8) for c in (p, 1, 0)], dtype=np.int8)
        for s in rng.integers(2, 25, 24)
    ]
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION}
    return save_dataset(MelodyDataset(train=mels[:20], valid=mels[20:], manifest=manifest), path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    data = _tiny_dataset(folder / "tiny.npz")
    out = folder / "prior.safetensors"
    args = ["pretrain", "--data", str(data), "--out", str(out), "--hidden-size", "12", "--steps", "12",
            "--batch-size", "8", "--window", "16", "--eval-every", "6", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "best checkpoint" in result.output and "baseline: unigram" in result.output
    return out


def test_pretrain_writes_a_loadable_checkpoint(trained: Path) -> None:
    model, meta = load_prior(trained)
    assert model.model_config()["hidden_size"] == 12
    assert meta["model"]["hidden_size"] == 12 and meta["train_config"]["steps"] == 12
    assert set(meta["metrics"]["baselines"]) == {"hold", "unigram", "bigram"}
    assert (trained.with_name("prior.run") / "metrics.json").is_file()


def test_generate_writes_npy_midi_and_png(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "gen"
    args = ["generate", "--model", str(trained), "-n", "5", "--length", "12", "--seed", "1", "--primer", "C4",
            "--out", str(out), "--no-wav", "--render-max", "2"]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    mel = np.load(out / "melodies.npy")
    assert mel.shape == (5, 13) and mel.dtype == np.int64  # the primer, then 12 generated steps
    assert (mel[:, 0] == 14).all()  # C4, the primer, is the first note heard
    assert "1 primer step(s) + 12 generated" in result.output
    assert sorted(p.name for p in out.glob("*.mid")) == ["melody_000.mid", "melody_001.mid"]
    from rltuner.data.midi_io import midi_to_melody

    for i, path in enumerate(
        sorted(out.glob("*.mid"))
    ):  # each MIDI file opens with the primer's note-on at t=0
        heard = midi_to_melody(path, fit_range=False)
        assert heard[0] == 14
        assert np.array_equal(heard, mel[i][: len(heard)])  # and plays the saved melody
    assert (out / "piano_roll.png").stat().st_size > 0
    again = CliRunner().invoke(
        cli, [*args[:-5], "--out", str(tmp_path / "g2"), "--no-wav", "--no-midi", "--no-png"]
    )
    assert again.exit_code == 0 and np.array_equal(np.load(tmp_path / "g2" / "melodies.npy"), mel)
    # a class number is the same primer as its note name (the forms tune's --primer takes too)
    as_class = [a if a != "C4" else "14" for a in args[:-5]]
    by_class = CliRunner().invoke(
        cli, [*as_class, "--out", str(tmp_path / "g3"), "--no-wav", "--no-midi", "--no-png"]
    )
    assert by_class.exit_code == 0 and np.array_equal(np.load(tmp_path / "g3" / "melodies.npy"), mel)


def test_generate_with_a_midi_primer(trained: Path, tmp_path: Path) -> None:
    from rltuner.data.midi_io import write_midi

    primer = write_midi(np.array([14, 1, 16, 1, 18, 0]), tmp_path / "p.mid")
    args = ["generate", "--model", str(trained), "-n", "2", "--primer", str(primer), "--out", str(tmp_path / "g"),
            "--no-wav", "--no-midi", "--no-png", "--greedy"]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    mel = np.load(tmp_path / "g" / "melodies.npy")
    assert np.array_equal(mel[0], mel[1])  # same primer, greedy: same melody
    assert mel.shape == (2, 6 + 32) and mel[0, :6].tolist() == [
        14,
        1,
        16,
        1,
        18,
        0,
    ]  # it continues the primer


def test_generate_with_random_primers_never_opens_with_silence(trained: Path, tmp_path: Path) -> None:
    args = ["generate", "--model", str(trained), "-n", "200", "--seed", "3", "--out", str(tmp_path / "g"),
            "--no-wav", "--no-midi", "--no-png"]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    mel = np.load(tmp_path / "g" / "melodies.npy")
    assert mel.shape == (200, 33) and (mel[:, 0] >= 2).all()  # a note-on first, whatever the model plays next
    assert len(set(mel[:, 0].tolist())) > 20  # the primers are random notes


def test_generate_quiet_hides_the_progress_bar_not_the_results(trained: Path, tmp_path: Path) -> None:
    args = ["generate", "--model", str(trained), "-n", "3000", "--length", "4", "--seed", "5", "--no-wav",
            "--no-midi", "--no-png"]  # fmt: skip
    loud = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "loud")], catch_exceptions=False)
    assert loud.exit_code == 0, loud.output
    assert "generate:" in loud.stderr and "/3000 " in loud.stderr  # tqdm's bar, on stderr
    quiet = CliRunner().invoke(cli, [*args, "-q", "--out", str(tmp_path / "quiet")], catch_exceptions=False)
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == "" and quiet.stdout == loud.stdout.replace(
        "loud", "quiet"
    )  # the same result lines
    assert "wrote 1 file(s)" in quiet.stdout and quiet.stdout.count("melody ") == 3
    mel = np.load(tmp_path / "quiet" / "melodies.npy")
    assert mel.shape == (3000, 5) and np.array_equal(mel, np.load(tmp_path / "loud" / "melodies.npy"))


@pytest.mark.parametrize(
    "args, words",
    [
        (["generate", "--model", "missing.safetensors"], "does not exist"),
        (["generate", "--model", "{ckpt}", "--primer", "H9"], "--primer"),
        (["generate", "--model", "{ckpt}", "--temperature", "0"], "temperature"),
        (["pretrain", "--data", "missing.npz", "--out", "x.safetensors"], "does not exist"),
        (["pretrain", "--data", "{data}", "--out", "{tmp}/x.safetensors", "--steps", "0"], "steps"),
    ],
)
def test_user_errors_are_one_line(trained: Path, tmp_path: Path, capsys, args: list[str], words: str) -> None:
    data = _tiny_dataset(tmp_path / "d.npz")
    filled = [a.format(ckpt=trained, data=data, tmp=tmp_path) for a in args]
    if filled[0] == "generate":
        filled += ["--out", str(tmp_path / "o"), "--no-wav", "--no-midi", "--no-png"]
    with pytest.raises(SystemExit) as exc:
        main(filled)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_pretrain_option_defaults_are_the_config_defaults() -> None:
    from rltuner.cli.pretrain import pretrain as command
    from rltuner.domains import DOMAINS
    from rltuner.models.train import PretrainConfig

    cfg = PretrainConfig()
    defaults = {p.name: p.default for p in command.params}
    for name in ("batch_size", "lr", "seed", "device", "threads"):
        assert defaults[name] == getattr(cfg, name), name
    assert defaults["arch"] == cfg.model.arch
    # None: the config's default, or the domain's own (the domain table's pretrain_defaults)
    for name in ("steps", "window", "eval_every", "patience", "hidden_size"):
        assert defaults[name] is None, name
    assert DOMAINS["music"].pretrain_defaults == {}  # music: the paper's recipe, PretrainConfig's defaults
    mol = DOMAINS["molecules"].pretrain_defaults
    assert mol["skip_first"] == 0 and mol["window"] >= 55  # whole molecules, every prediction counted


def test_generate_gives_the_same_melodies_at_any_thread_count(trained: Path, tmp_path: Path) -> None:
    # --threads 1 on this 2-core class of machine samples two batches side by side; --threads 2 one at a time
    args = ["generate", "--model", str(trained), "-n", "2500", "--length", "6", "--seed", "9", "-q", "--no-wav",
            "--no-midi", "--no-png"]  # fmt: skip
    runs = {}
    for threads in ("1", "2"):
        result = CliRunner().invoke(cli, [*args, "--threads", threads, "--out", str(tmp_path / threads)])
        assert result.exit_code == 0, result.output
        runs[threads] = np.load(tmp_path / threads / "melodies.npy")
    assert runs["1"].shape == (2500, 7) and np.array_equal(runs["1"], runs["2"])
