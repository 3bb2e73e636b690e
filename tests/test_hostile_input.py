"""Issue #14: each defect found by fuzzing as a hostile user, as a test (numbers follow the issue's list)."""

from __future__ import annotations

import json
import os
import signal
import struct
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import mido
import numpy as np
import pytest
import torch

from rltuner.cli.main import main
from rltuner.data import midi_import
from rltuner.data.dataset import BuildConfig, build_dataset
from rltuner.data.midi_import import ExtractSettings, import_midi_folder, midi_file_to_melodies
from rltuner.data.midi_io import midi_to_melody
from rltuner.encoding import Note, notes_to_classes
from rltuner.errors import CheckpointError, ConfigError, InputLimitError, TrainingDivergedError
from rltuner.loading import load_model
from rltuner.models.checkpoint import load_training_state, read_checkpoint, save_prior
from rltuner.models.prior import ModelConfig, build_prior
from rltuner.models.train import PretrainConfig, WindowSampler, pretrain, run_dir_for

ANY = ExtractSettings(min_length=1)
# One note 2^28 - 1 ticks long at 1 tick per quarter: 37 bytes, a billion sixteenth steps.
LONG_NOTE = (
    b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x01MTrk\x00\x00\x00\x0f\x00\x90<P\xff\xff\xff\x7f\x80<\x00"
    b"\x00\xff/\x00"
)


def _midi(path: Path, notes: list[tuple[int, int, int]], *, tpq: int = 480, key: str | None = None) -> Path:
    """A one-track MIDI file from (pitch, start, duration) in sixteenths."""
    step = tpq // 4
    events = [] if key is None else [(0, 0, mido.MetaMessage("key_signature", key=key))]
    for pitch, start, dur in notes:
        events.append((start * step, 2, mido.Message("note_on", note=pitch, velocity=80)))
        events.append(((start + dur) * step, 1, mido.Message("note_off", note=pitch)))
    events.sort(key=lambda e: (e[0], e[1]))
    track, now = mido.MidiTrack(), 0
    for tick, _, msg in events:
        track.append(msg.copy(time=tick - now))
        now = tick
    mid = mido.MidiFile(type=1, ticks_per_beat=tpq)
    mid.tracks.append(track)
    path.parent.mkdir(parents=True, exist_ok=True)
    mid.save(str(path))
    return path


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    return int(exc.value.code or 0), capsys.readouterr().err


SCALE = [(60 + p, 4 * i, 4) for i, p in enumerate([0, 2, 4, 5, 7, 9, 11, 12])]


# 1. Memory ------------------------------------------------------------------------------------------------


def test_1_a_37_byte_file_is_dropped_without_allocating(tmp_path: Path) -> None:
    path = tmp_path / "long.mid"
    path.write_bytes(LONG_NOTE)
    assert len(LONG_NOTE) == 37
    tracemalloc.start()
    counts = midi_file_to_melodies(path, ANY).counts
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert counts["too_long"] == 1 and counts["kept"] == 0
    assert peak < 20 * 2**20  # the old importer allocated 8 GiB here
    with pytest.raises(InputLimitError, match="too long"):
        midi_to_melody(path)  # the single-file reader (primers, score, render)


def test_1_a_long_but_legal_note_is_dropped_as_too_long(tmp_path: Path) -> None:
    path = _midi(tmp_path / "drone.mid", [(60, 0, 8), (62, 8, 5000)])
    assert midi_file_to_melodies(path, ANY).counts["too_long"] == 1


def test_1_the_long_file_as_a_primer_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "long.mid"
    path.write_bytes(LONG_NOTE)
    code, err = _cli(capsys, "generate", "--primer", str(path), "--out", str(tmp_path / "g"), "-n", "1")
    assert code == 2 and err.count("\n") == 1 and "too long" in err


def test_1_notes_to_classes_refuses_a_giant_length() -> None:
    with pytest.raises(InputLimitError):
        notes_to_classes([Note(60, 0, 1)], length=2**40)


# 2. Ticks per quarter 0 -------------------------------------------------------------------------------------


def test_2_zero_ticks_per_quarter_is_unparseable_and_the_build_goes_on(tmp_path: Path) -> None:
    good = _midi(tmp_path / "src" / "good.mid", SCALE)
    bad = bytearray(good.read_bytes())
    bad[12:14] = b"\x00\x00"
    (tmp_path / "src" / "zero.mid").write_bytes(bytes(bad))
    assert midi_file_to_melodies(tmp_path / "src" / "zero.mid", ANY).counts["unparseable"] == 1
    cfg = BuildConfig(sources=(str(tmp_path / "src"),), jobs=1, valid_fraction=0.0, min_length=8)
    report = build_dataset(cfg, tmp_path / "d.npz", progress=False)
    assert report.counts["kept"] == 1 and report.drops["unparseable"] == 1


# 3. Time -------------------------------------------------------------------------------------------------


def test_3_notes_to_classes_is_not_quadratic() -> None:
    notes = [Note(48 + i % 36, 2 * i, 3) for i in range(200_000)]  # overlapping: each is cut by the next
    began = time.perf_counter()
    out = notes_to_classes(notes)
    assert time.perf_counter() - began < 5.0  # was ~2 minutes
    assert len(out) == 400_001 and out[0] == 2 and out[1] == 1 and out[2] == 3


def test_3_many_tracks_and_many_notes_are_limits(tmp_path: Path) -> None:
    data = _midi(tmp_path / "one.mid", SCALE).read_bytes()
    start = data.find(b"MTrk")
    many = data[:10] + struct.pack(">H", 5000) + data[12:start] + data[start:] * 5000
    (tmp_path / "many.mid").write_bytes(many)
    began = time.perf_counter()
    assert midi_file_to_melodies(tmp_path / "many.mid", ANY).counts["limit"] == 1
    assert time.perf_counter() - began < 1.0
    tight = replace(midi_import.LIMITS, max_notes=5)
    assert midi_file_to_melodies(tmp_path / "one.mid", ANY, tight).counts["limit"] == 1


@pytest.mark.parametrize("jobs", [1, 2])  # in this process, and in the pool's worker processes
def test_3_a_slow_file_is_counted_as_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int
) -> None:
    _midi(tmp_path / "src" / "a.mid", SCALE)
    _midi(tmp_path / "src" / "b.mid", SCALE)

    def slow(path: object, settings: object, limits: object = None) -> None:
        time.sleep(5)

    monkeypatch.setattr(midi_import, "midi_file_to_melodies", slow)
    quick = replace(midi_import.LIMITS, max_file_seconds=0.2)
    began = time.perf_counter()
    res = import_midi_folder(tmp_path / "src", ANY, jobs=jobs, progress=False, use_cache=False, limits=quick)
    assert res.counts["timeout"] == 2 and res.counts["files"] == 2
    assert time.perf_counter() - began < 4.0


# 4. Key signature checked against the notes ---------------------------------------------------------------

D_MINOR = [(p, 4 * i, 4) for i, p in enumerate([62, 64, 65, 67, 69, 70, 69, 65, 64, 62, 61, 62])]


def test_4_a_contradicted_signature_is_overruled_and_counted(tmp_path: Path) -> None:
    wrong = midi_file_to_melodies(_midi(tmp_path / "a.mid", D_MINOR, key="A"), ANY)  # 3 sharps, D minor notes
    assert wrong.counts["key_signature_overruled"] == 1
    right = midi_file_to_melodies(_midi(tmp_path / "b.mid", D_MINOR, key="Dm"), ANY)
    assert right.counts["key_signature_overruled"] == 0
    assert wrong.melodies[0].tolist() == right.melodies[0].tolist()  # both land in A minor
    cfg = BuildConfig(sources=(str(tmp_path / "a.mid"),), jobs=1, valid_fraction=0.0, min_length=8)
    report = build_dataset(cfg, tmp_path / "d.npz", progress=False)
    assert report.manifest["counts"]["key_signature_overruled"] == 1
    assert "1 melodies whose key signature the notes contradict" in report.format()


# 5. Pretraining: Ctrl-C at any point of a step resumes bit-identically ---------------------------------------


def _toy(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 38, size=int(rng.integers(20, 40))).astype(np.int64) for _ in range(n)]


@pytest.mark.parametrize("presses", [1, 2])
def test_5_sigint_mid_step_then_resume_equals_the_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, presses: int
) -> None:
    train, valid = _toy(30, 2), _toy(6, 3)
    cfg = PretrainConfig(
        model=ModelConfig(hidden_size=12), steps=16, batch_size=8, window=16, skip_first=2, eval_every=5,
        patience=0,
    )  # fmt: skip
    full = pretrain(train, valid, tmp_path / "a" / "p.safetensors", cfg, progress=False)
    calls = {"n": 0}
    original = WindowSampler.batch

    def interrupted(self: WindowSampler, batch_size: int):  # Ctrl-C after the 12th batch is drawn
        out = original(self, batch_size)
        calls["n"] += 1
        if calls["n"] == 12:
            for _ in range(presses):
                signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(WindowSampler, "batch", interrupted)
    out_b = tmp_path / "b" / "p.safetensors"
    with pytest.raises(KeyboardInterrupt):
        pretrain(train, valid, out_b, cfg, progress=False)
    saved = load_training_state(run_dir_for(out_b) / "resume.pt")
    assert json.loads(saved["info"])["step"] == (12 if presses == 1 else 10)  # a step boundary
    monkeypatch.setattr(WindowSampler, "batch", original)
    pretrain(train, valid, out_b, cfg, resume=True, progress=False)
    a = read_checkpoint(run_dir_for(tmp_path / "a" / "p.safetensors") / "last.safetensors")[0]
    b = read_checkpoint(run_dir_for(out_b) / "last.safetensors")[0]
    assert full.steps_done == 16 and all(torch.equal(a[k], b[k]) for k in a)


# 6. One line and exit status 2 for nonsense settings ----------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "--seed", "-1", "-n", "1"],
        ["generate", "--seed", "99999999999999999999999", "-n", "1"],
        ["generate", "-n", "100000000"],
        ["generate", "--render-max", "-1"],
        ["generate", "--temperature", "1e-300"],  # NaN probabilities: all-OFF melodies before
        ["generate", "--temperature", "nan"],
        ["generate", "--length", "1000000"],
        ["tune", "--seed", "-1"],
        ["tune", "--set", "seed=1e30"],
        ["tune", "--set", "learning_rate=inf"],
        ["tune", "--set", "learning_rate=1e308"],
        ["tune", "--set", "reward_scale=1e-300"],
        ["tune", "--set", "grad_clip=nan"],
        ["tune", "--set", "n_envs=1e6"],
        ["tune", "--set", "replay_size=1e12"],
        ["tune", "--set", "eval_episodes=1e8"],
        ["pretrain", "--out", "OUT/p.safetensors", "--window", "100000"],
        ["pretrain", "--out", "OUT/p.safetensors", "--hidden-size", "100000"],
        ["pretrain", "--out", "OUT/p.safetensors", "--seed", "-1"],
        ["pretrain", "--out", "/sys/p.safetensors", "--data", "DATA"],
        ["pretrain", "--out", "/sys/p.safetensors"],  # refused before the default dataset is even built
        ["data", "build", "--source", "SRC", "--split-rest-bars", "nan", "--out", "OUT/d.npz"],
        ["data", "build", "--source", "SRC", "--split-rest-bars", "inf", "--out", "OUT/d.npz"],
        ["data", "build", "--source", "SRC", "--collections", "essen", "--out", "OUT/d.npz"],
    ],
)
def test_6_nonsense_settings_are_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    src = tmp_path / "src"
    _midi(src / "a.mid", SCALE * 4)
    if "DATA" in args:
        cfg = BuildConfig(sources=(str(src),), jobs=1, valid_fraction=0.5, min_length=8)
        build_dataset(cfg, tmp_path / "d.npz", progress=False)
    fixed = [
        a.replace("OUT", str(tmp_path / "o"))
        .replace("SRC", str(src))
        .replace("DATA", str(tmp_path / "d.npz"))
        for a in args
    ]
    if fixed[0] in ("generate", "tune"):
        fixed += ["--out", str(tmp_path / "o")]
    code, err = _cli(capsys, *fixed)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) <= 4, err  # one line (click adds its usage hint above it)
    assert lines[-1].lower().startswith("error"), err


def test_6_nan_loss_stops_tuning_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rltuner.domains.music import music_domain
    from rltuner.rl import tuner
    from rltuner.rl.config import TuneConfig

    calls = {"n": 0}
    original = tuner.ValueLearner.step

    def poisoned(self: tuner.ValueLearner, batch: object) -> float:
        calls["n"] += 1
        if calls["n"] >= 3:
            with torch.no_grad():
                next(self.q_net.parameters()).fill_(float("nan"))
            return float("nan")
        return original(self, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(tuner.ValueLearner, "step", poisoned)
    cfg = TuneConfig(
        total_steps=2048, n_envs=8, batch_size=64, train_every=128, eval_every=256, eval_episodes=4,
        epsilon_steps=512, replay_size=1024, tensorboard=False, progress=False,
    )  # fmt: skip
    with pytest.raises(TrainingDivergedError, match="diverged at gradient step 4"):
        tuner.tune(cfg, music_domain(), tmp_path / "run")
    model = load_model(tmp_path / "run" / "model.safetensors")  # the last good one, finite
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


# 7. Checkpoints ---------------------------------------------------------------------------------------------


def _edit_header(path: Path, change) -> Path:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    change(header)
    text = json.dumps(header).encode()
    out = path.with_name("edited.safetensors")
    out.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n :])
    return out


@pytest.fixture
def small_prior(tmp_path: Path) -> Path:
    return save_prior(tmp_path / "p.safetensors", build_prior(ModelConfig(hidden_size=8)), step=1)


@pytest.mark.parametrize(
    ("field", "value"), [("hidden_size", 10**9), ("num_layers", 10**6), ("vocab_size", 10**8)]
)
def test_7_a_huge_model_config_is_refused_before_allocation(
    small_prior: Path, field: str, value: int
) -> None:
    def change(header: dict) -> None:
        model = json.loads(header["__metadata__"]["model"])
        model[field] = value
        header["__metadata__"]["model"] = json.dumps(model)

    began = time.perf_counter()
    with pytest.raises(CheckpointError, match="at most"):
        load_model(_edit_header(small_prior, change))
    assert time.perf_counter() - began < 2.0


def test_7_nan_and_wrong_dtype_weights_are_refused(small_prior: Path, tmp_path: Path) -> None:
    model = build_prior(ModelConfig(hidden_size=8))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    nan_path = save_prior(tmp_path / "nan.safetensors", model)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_model(nan_path)
    half_path = save_prior(tmp_path / "half.safetensors", build_prior(ModelConfig(hidden_size=8)).half())
    with pytest.raises(CheckpointError, match="float16, expected float32"):
        load_model(half_path)


def test_7_nan_weights_make_generate_fail_not_write_silence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = build_prior(ModelConfig(hidden_size=8))
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    path = save_prior(tmp_path / "nan.safetensors", model)
    code, err = _cli(capsys, "generate", "--model", str(path), "-n", "2", "--out", str(tmp_path / "g"))
    assert code == 2 and "NaN" in err and not (tmp_path / "g" / "melodies.npy").exists()


def test_7_a_malicious_resume_state_is_refused_in_plain_words(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "resume.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError) as exc:
        load_training_state(path)
    message = str(exc.value)
    assert "for safety" in message and "weights_only" not in message and "\n" not in message


# 8. MIDI-import cache --------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncate", "index"])
def test_8_a_bad_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str) -> None:
    monkeypatch.setenv("RLTUNER_CACHE", str(tmp_path / "cache"))
    _midi(tmp_path / "src" / "a.mid", SCALE)
    first = import_midi_folder(tmp_path / "src", ANY, jobs=1, progress=False)
    (cache,) = (tmp_path / "cache" / "midi").iterdir()
    if damage == "truncate":
        cache.write_bytes(cache.read_bytes()[:-40])
    else:
        with np.load(cache) as npz:
            arrays = {k: npz[k] for k in npz.files}
        arrays["index"] = np.array(json.dumps([["key", 0, 99, {"kept": "x"}]]))
        with cache.open("wb") as fh:
            np.savez(fh, **arrays)
    again = import_midi_folder(tmp_path / "src", ANY, jobs=1, progress=False)
    assert again.counts["cached"] == 0 and [m.tolist() for m in again.melodies] == [
        m.tolist() for m in first.melodies
    ]
    third = import_midi_folder(tmp_path / "src", ANY, jobs=1, progress=False)
    assert third.counts["cached"] == 1  # the rebuilt cache is good again


# 9. Smaller items ----------------------------------------------------------------------------------------


def test_9_header_only_file_is_unparseable(tmp_path: Path) -> None:
    (tmp_path / "h.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x00\x01\xe0")
    counts = midi_file_to_melodies(tmp_path / "h.mid", ANY).counts
    assert counts["unparseable"] == 1 and counts["no_notes"] == 0


def test_9_one_note_melodies_do_not_pass_min_length(tmp_path: Path) -> None:
    counts = midi_file_to_melodies(_midi(tmp_path / "one.mid", [(60, 0, 64)]), ExtractSettings()).counts
    assert counts["too_short"] == 1 and counts["kept"] == 0


def test_9_drums_only_primer_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mid = mido.MidiFile(type=1, ticks_per_beat=480)
    mid.tracks.append(
        mido.MidiTrack(
            [
                mido.Message("note_on", note=36, channel=9),
                mido.Message("note_off", note=36, channel=9, time=480),
            ]
        )
    )
    mid.save(str(tmp_path / "drums.mid"))
    code, err = _cli(
        capsys, "generate", "--primer", str(tmp_path / "drums.mid"), "--out", str(tmp_path / "g")
    )
    assert code == 2 and "no notes" in err


def test_9_grad_clip_nan_is_refused() -> None:
    with pytest.raises(ConfigError, match="finite"):
        replace(PretrainConfig(), grad_clip=float("nan")).validate()


def test_9_same_seed_checkpoints_are_byte_identical(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_prior(ModelConfig(hidden_size=8))
    meta = {f"key{i}": i for i in range(20)}  # many keys: hash-map order would differ between writes
    a = save_prior(tmp_path / "a.safetensors", model, **meta).read_bytes()
    b = save_prior(tmp_path / "b.safetensors", model, **dict(reversed(list(meta.items())))).read_bytes()
    assert a == b


def test_9_temporaries_of_killed_writers_are_removed(tmp_path: Path) -> None:
    from rltuner.fileio import write_text_atomic

    dead = tmp_path / ".out.txt.999999999.abc.tmp"  # no such process id
    alive = tmp_path / f".out.txt.{os.getpid()}.def.tmp"
    dead.write_bytes(b"")
    alive.write_bytes(b"")
    write_text_atomic(tmp_path / "out.txt", "x")
    assert not dead.exists() and alive.exists() and (tmp_path / "out.txt").read_text() == "x"


def test_9_a_stale_manifest_sidecar_is_repaired(tmp_path: Path) -> None:
    from rltuner.data.dataset import load_dataset, manifest_path

    src = tmp_path / "src"
    _midi(src / "a.mid", SCALE * 4)
    cfg = BuildConfig(sources=(str(src),), jobs=1, valid_fraction=0.0, min_length=8)
    out = tmp_path / "d.npz"
    build_dataset(cfg, out, progress=False)
    manifest_path(out).write_text('{"from": "another build"}')
    ds = load_dataset(out)
    assert json.loads(manifest_path(out).read_text()) == ds.manifest


def test_9_the_build_report_names_each_dropped_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    _midi(src / "good.mid", SCALE * 4)
    (src / "broken.mid").write_bytes(b"MThd junk")
    (src / "long.mid").write_bytes(LONG_NOTE)
    report = tmp_path / "dropped.tsv"
    main_args = ["data", "build", "--source", str(src), "--out", str(tmp_path / "d.npz"), "--min-length", "8"]
    main([*main_args, "--valid-fraction", "0", "--jobs", "1", "--quiet", "--report", str(report)])
    assert "dropped files" in capsys.readouterr().out
    rows = [line.split("\t") for line in report.read_text().splitlines()[1:]]
    assert sorted((Path(f).name, r, n) for f, r, n in rows) == [
        ("broken.mid", "unparseable", "1"),
        ("long.mid", "too_long", "1"),
    ]


def test_dataset_with_an_encrypted_member_is_one_error(tmp_path: Path) -> None:
    """Found by the large fuzz run: zipfile raises RuntimeError ("password required") for such a member."""
    from rltuner.data.dataset import load_dataset
    from rltuner.errors import DatasetError

    src = tmp_path / "src"
    _midi(src / "a.mid", SCALE * 4)
    out = tmp_path / "d.npz"
    build_dataset(
        BuildConfig(sources=(str(src),), jobs=1, valid_fraction=0.0, min_length=8), out, progress=False
    )
    data = bytearray(out.read_bytes())
    for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local and central headers: "encrypted" flag
        i = data.find(sig)
        while i >= 0:
            data[i + at] |= 1
            i = data.find(sig, i + 4)
    out.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="not a readable dataset"):
        load_dataset(out)


def test_7_nan_prior_makes_tune_fail_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = build_prior(ModelConfig())
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    path = save_prior(tmp_path / "nan.safetensors", model)
    code, err = _cli(capsys, "tune", "--prior", str(path), "--out", str(tmp_path / "run"), "--quiet")
    assert code == 2 and "NaN" in err and "Traceback" not in err


def test_9_double_ctrl_c_before_the_first_evaluation_keeps_a_resume_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rltuner.domains.music import music_domain
    from rltuner.rl import tuner
    from rltuner.rl.config import TuneConfig

    cfg = TuneConfig(
        total_steps=512, n_envs=8, batch_size=64, train_every=128, eval_every=0, eval_episodes=4,
        epsilon_steps=256, replay_size=1024, tensorboard=False, progress=False,
    )  # fmt: skip
    original = tuner.make_actor

    def aborted(*args: object) -> object:  # a second Ctrl-C as the first round starts
        raise KeyboardInterrupt

    monkeypatch.setattr(tuner, "make_actor", aborted)
    with pytest.raises(KeyboardInterrupt):
        tuner.tune(cfg, music_domain(), tmp_path / "run")
    assert (tmp_path / "run" / "resume.pt").is_file()
    monkeypatch.setattr(tuner, "make_actor", original)
    resumed = tuner.tune(cfg, music_domain(), tmp_path / "run", resume=True)
    fresh = tuner.tune(cfg, music_domain(), tmp_path / "fresh")
    assert resumed.env_steps == fresh.env_steps == 512
    a, b = resumed.policy.state_dict(), fresh.policy.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("damage", ["numpy_rng", "model", "info"])
def test_5_a_damaged_pretraining_resume_state_is_one_error(tmp_path: Path, damage: str) -> None:
    from rltuner.models.checkpoint import save_training_state

    train, valid = _toy(10, 0), _toy(3, 1)
    cfg = PretrainConfig(
        model=ModelConfig(hidden_size=8), steps=4, batch_size=4, window=16, skip_first=2, eval_every=2
    )
    out = tmp_path / "p.safetensors"
    pretrain(train, valid, out, cfg, progress=False)
    path = run_dir_for(out) / "resume.pt"
    state = load_training_state(path)
    if damage == "numpy_rng":
        state["numpy_rng"] = json.dumps({"bit_generator": "nonsense"})
    elif damage == "model":
        state["model"] = {"w": torch.zeros(2)}
    else:
        info = json.loads(state["info"])
        info["step"] = "x"
        state["info"] = json.dumps(info)
    save_training_state(path, state)
    with pytest.raises(CheckpointError, match="cannot resume"):
        pretrain(train, valid, out, replace(cfg, steps=6), resume=True, progress=False)


def test_6_audio_longer_than_an_hour_is_refused_before_allocating() -> None:
    from rltuner.data.audio import synthesize

    melody = np.full(20_000, 1, dtype=np.int64)
    melody[0] = 14
    with pytest.raises(InputLimitError, match="at most 3,600 s"):
        synthesize(melody, tempo=1.0, soundfont=False)  # 20,000 sixteenths at 1 qpm: 83 hours
