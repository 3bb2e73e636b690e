"""``rltuner score``: the music-theory reward of one melody step by step, or the Table 1 statistics of many."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from rltuner.cli.options import rules_option
from rltuner.errors import DatasetError, InvalidMelodyError

_MIDI_SUFFIXES = (".mid", ".midi")


def _load_melodies(path: Path, length: int | None) -> tuple[Any, list[str]]:
    """Melodies of INPUT as an (N, T) int64 array, and one name per melody."""

    from rltuner.encoding import validate_classes

    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in _MIDI_SUFFIXES and p.is_file())
        if not files:
            raise InvalidMelodyError(f"no .mid or .midi files in folder {path}")
        return _stack([_read_midi(f, length) for f in files], [str(f.relative_to(path)) for f in files])
    if path.suffix.lower() in _MIDI_SUFFIXES:
        return _stack([_read_midi(path, length)], [path.name])
    if path.suffix.lower() == ".npy":
        try:
            from rltuner.data.arrays import load_npy

            data = load_npy(path, kinds="iubf")  # header checked before allocating
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read {path} as a .npy array of melodies: {exc}") from None
        arr = validate_classes(data)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise InvalidMelodyError(f"{path} holds an array of shape {arr.shape}; expected (N, T) melodies")
        return arr, [f"{path.name}[{i}]" for i in range(arr.shape[0])]
    raise InvalidMelodyError(f"{path}: expected a .mid/.midi file, a folder of them, or a .npy of melodies")


def _read_midi(path: Path, length: int | None) -> Any:
    from rltuner.data.midi_io import midi_to_melody

    return midi_to_melody(path, length)


def _stack(melodies: list[Any], names: list[str]) -> tuple[Any, list[str]]:
    import numpy as np

    sizes = sorted({len(m) for m in melodies})
    if len(sizes) > 1:
        raise InvalidMelodyError(
            f"the melodies have different lengths ({sizes[0]}..{sizes[-1]} steps); pass --length to cut or "
            "pad them all to one length"
        )
    return np.stack(melodies), names


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _score_one(melody: Any, name: str, length: int, key: str, mode: str, as_json: bool) -> None:
    from rltuner.encoding import class_name
    from rltuner.rewards.music_theory import music_theory_rewards

    by_rule = music_theory_rewards(melody[None, :], length=length, by_rule=True, key=key, mode=mode)
    assert isinstance(by_rule, dict)
    rules = list(by_rule)
    total = sum(by_rule[r][0] for r in rules)  # rule order, as the reward sums them
    if as_json:
        steps = [
            {
                "step": t,
                "class": int(c),
                "name": class_name(int(c)),
                **{r: float(by_rule[r][0, t]) for r in rules},
            }
            | {"total": float(total[t])}
            for t, c in enumerate(melody.tolist())
        ]
        out = {
            "input": name,
            "length": length,
            "key": key,
            "mode": mode,
            "steps": steps,
            "sum": float(total.sum()),
        }
        click.echo(json.dumps(out, indent=2))
        return
    short = {"repeated_motif": "rep_motif", "autocorrelation": "autocorr", "repetition": "repeat"}
    headers = ["step", "class", *(short.get(r, r) for r in rules), "total"]
    widths = [max(len(h), 7) for h in headers]
    click.echo(f"{name}: r_MT per step (L = {length}, {key} {mode})")
    click.echo("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for t, c in enumerate(melody.tolist()):
        cells = [str(t), class_name(int(c)), *(f"{by_rule[r][0, t]:.4g}" for r in rules), f"{total[t]:.4f}"]
        click.echo("  ".join(x.rjust(w) for x, w in zip(cells, widths, strict=True)))
    sums = ["sum", "", *(f"{by_rule[r][0].sum():.4g}" for r in rules), f"{total.sum():.4f}"]
    click.echo("  ".join(x.rjust(w) for x, w in zip(sums, widths, strict=True)))


def _score_many(
    melodies: Any, name: str, length: int, key: str, mode: str, as_json: bool, primer_steps: int = 0
) -> None:
    from rltuner.rewards.music_theory import music_theory_rewards
    from rltuner.rewards.statistics import format_table1, melody_statistics

    stats = melody_statistics(melodies, key=key, mode=mode, primer_steps=primer_steps)
    # r_MT scores what the model played: the steps after the primer (the reward never sees a primer)
    generated = melodies[:, primer_steps:]
    rewards = music_theory_rewards(generated, length=length - primer_steps, key=key, mode=mode)
    assert not isinstance(rewards, dict)
    stats["mean_reward_per_step"] = float(rewards.mean())
    if as_json:
        click.echo(json.dumps(_json_safe({"input": name, "length": length, **stats}), indent=2))
        return
    click.echo(f"{name}: {stats['n_melodies']} melodies of {melodies.shape[1]} steps ({key} {mode})")
    click.echo(format_table1({"ours": stats}))
    click.echo(f"mean r_MT per step: {stats['mean_reward_per_step']:.4f}")
    per = stats["intervals_per_melody"]
    click.echo("intervals per melody: " + ", ".join(f"{k} {v:.2f}" for k, v in per.items() if v))


EXAMPLES = """
Examples:

\b
  rltuner score samples/q/melodies.npy                  # Table 1 statistics and mean r_MT
  rltuner score tune.mid                                # one melody: r_MT per step and rule
  rltuner score midi/ --key G --length 32 --json        # a folder of MIDI files, in G major, as JSON
  rltuner score samples/q/melodies.npy --rule my_rules.py:strong_beats   # with your own rule
"""


@click.command(name="score", epilog=EXAMPLES)
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for machines) instead of a table.")
@click.option("--key", default="C", show_default=True, help="Tonic of the key the rules judge against.")
@click.option(
    "--mode",
    type=click.Choice(["major", "minor"]),
    default="major",
    show_default=True,
    help="Mode of the key.",
)
@click.option(
    "--length",
    type=click.IntRange(min=1),
    default=None,
    help="Melody length L (tonic and extremes rules); MIDI input is cut or padded to it. Default: the melodies'.",
)
@click.option(
    "--primer-steps",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Leading steps of each melody that are its primer (rltuner generate's melodies.npy: 1). Table 1 "
    "counts them as heard except in the key and tonic rows; r_MT scores the steps after them.",
)
@rules_option()
def score(
    input_path: Path,
    as_json: bool,
    key: str,
    mode: str,
    length: int | None,
    primer_steps: int,
    rules: tuple[str, ...],
) -> None:
    """Score INPUT (a .mid file, a folder of them, or a .npy of melodies) with the music-theory reward.

    One melody: a per-step, per-rule table of r_MT. Several: the paper's Table 1 statistics beside the
    paper's figures, and the mean r_MT per step.
    """
    from rltuner.rewards.rules import key_tables

    key_tables(key, mode)  # a bad key fails before any file is read
    if rules:
        from rltuner.rewards.user_rules import register_rule_specs

        register_rule_specs(rules)
    melodies, names = _load_melodies(input_path, length)
    steps = melodies.shape[1]
    if length is not None and steps > length:
        raise InvalidMelodyError(f"the melodies have {steps} steps, longer than --length {length}")
    length = steps if length is None else length
    if primer_steps >= steps:
        raise InvalidMelodyError(f"--primer-steps {primer_steps} leaves none of the {steps} steps to score")
    if melodies.shape[0] == 1:
        _score_one(melodies[0][primer_steps:], names[0], length - primer_steps, key, mode, as_json)
    else:
        _score_many(melodies, input_path.name, length, key, mode, as_json, primer_steps)
