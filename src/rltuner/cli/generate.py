"""``rltuner generate``: sample melodies from a prior or a tuned model."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from rltuner.cli.options import SEED, device_option, domain_option, quiet_option, threads_option
from rltuner.errors import InvalidMelodyError

EXAMPLES = """
Examples:

\b
  rltuner generate -n 8 --out samples/prior                  # from the shipped Note RNN: .npy, MIDI, WAV, PNG
  rltuner generate --model runs/q -n 8 --seed 1 --out samples/q
  rltuner generate --primer C4 --temperature 0.8 -n 4 --out samples/c4
  rltuner generate -n 1000 --no-midi --no-wav --no-png --out samples/many
  rltuner generate --domain molecules -n 1000 --seed 0 --out gen/
"""


@click.command("generate", epilog=EXAMPLES)
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Checkpoint (.safetensors), or a tuning run folder holding model.safetensors [default: the shipped prior].",
)
@click.option(
    "-n", "--samples", "--num", "n", type=int, default=10, show_default=True,
    help="Number of melodies (or molecules) to sample.",
)  # fmt: skip
@click.option(
    "--length", type=int, default=32, show_default=True, help="Steps (sixteenths) generated after the primer."
)
@click.option("--temperature", type=float, default=1.0, show_default=True, help="Sampling temperature (> 0).")
@click.option("--greedy", is_flag=True, help="Take the most likely class at each step instead of sampling.")
@click.option(
    "--primer", default="random", show_default=True,
    help="First input: 'random' (one random note per melody), a note name (e.g. C4), a class 0..37, or a .mid "
    "file (its last --primer-steps steps); the same forms as tune's --primer.",
)  # fmt: skip
@click.option(
    "--primer-steps", type=int, default=16, show_default=True,
    help="With a .mid primer: how many of its last steps to feed.",
)  # fmt: skip
@click.option("--seed", type=SEED, default=None, help="Random seed (same seed, same melodies).")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("generated"), show_default=True,
    help="Output folder.",
)  # fmt: skip
@click.option("--midi/--no-midi", default=True, show_default=True, help="Write one MIDI file per melody.")
@click.option("--wav/--no-wav", default=True, show_default=True, help="Render one WAV file per melody.")
@click.option(
    "--png/--no-png", default=True, show_default=True, help="Draw a piano roll of the first melodies."
)
@click.option(
    "--render-max", type=click.IntRange(0), default=16, show_default=True,
    help="Write MIDI/WAV for at most this many melodies (all of them are in melodies.npy).",
)  # fmt: skip
@device_option()
@threads_option(
    pass_value=True,
    more_help="Music: batches of melodies are sampled side by side, one per CPU core left "
    "(cores // N; at N = 1 on 2 cores: two at a time); the melodies do not depend on it.",
)
@quiet_option()
@domain_option()
def generate(
    domain: str,
    model_path: Path | None,
    n: int,
    length: int,
    temperature: float,
    greedy: bool,
    primer: str,
    primer_steps: int,
    seed: int | None,
    out: Path,
    midi: bool,
    wav: bool,
    png: bool,
    render_max: int,
    device: str,
    quiet: bool,
    threads: int,
) -> None:
    """Sample melodies and write melodies.npy plus MIDI, WAV and a piano roll.

    A melody is its primer (the one priming note, or the last --primer-steps steps of a .mid primer)
    followed by the LENGTH generated steps: that is what melodies.npy holds (n x (primer + length) classes)
    and what the MIDI, WAV and piano roll play, so no melody opens with silence.

    With --domain molecules: sample SMILES strings into OUT/molecules.smi, one per line in sampling order,
    invalid ones included (--length, --primer and the MIDI/WAV/PNG options do not apply).
    """
    import numpy as np

    if domain == "molecules":
        _generate_molecules(model_path, n, temperature, seed, out, device, quiet)
        return

    from rltuner.devices import resolve_device
    from rltuner.encoding import class_name, with_primers
    from rltuner.fileio import atomic_path, ensure_writable_dir
    from rltuner.loading import load_model, resolve_model_path
    from rltuner.models.checkpoint import default_prior_path
    from rltuner.models.sampling import sample_scored
    from rltuner.threads import batch_workers

    if n < 1:
        raise click.BadParameter("must be at least 1", param_hint="-n")
    path = resolve_model_path(model_path) if model_path is not None else default_prior_path()
    model = load_model(path, resolve_device(device))
    primer_value = _parse_primer(primer, primer_steps)
    folder = ensure_writable_dir(out)
    with _sampling_bar(n, "melody", quiet) as update:
        drawn = sample_scored(
            model, n, length, temperature=temperature, greedy=greedy, primer=primer_value, seed=seed,
            progress=update, workers=batch_workers(threads),
        )  # fmt: skip
    # what is heard: the primer first (a .mid primer's last steps, or the one priming note), then the model
    melodies = with_primers(drawn.primers, drawn.melodies)
    with atomic_path(folder / "melodies.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, melodies)
    written = [folder / "melodies.npy"]
    shown = melodies[: max(render_max, 0)]
    if midi and len(shown):
        from rltuner.data.midi_io import write_midi_batch

        written += write_midi_batch(shown, folder)
    if wav and len(shown):
        from rltuner.data.audio import render_wav_batch

        written += render_wav_batch(shown, folder)
    if png and len(shown):
        from rltuner.data.pianoroll import plot_piano_roll

        # At most 16 panels: a readable figure (the plotting helper refuses more than 64).
        # a tuned model's file is always model.safetensors: its run folder names it better
        name = f"{path.parent.name}/{path.name}" if path.name == "model.safetensors" else path.name
        mode = "greedy" if greedy else f"temperature {temperature:g}"
        written.append(plot_piano_roll(shown[:16], folder / "piano_roll.png", title=f"{name} ({mode})"))
    for i, mel in enumerate(melodies[:3]):
        click.echo(f"melody {i}: " + " ".join(class_name(int(c)) for c in mel))
    click.echo(
        f"wrote {len(written)} file(s) to {folder} ({n} melodies in melodies.npy: "
        f"{melodies.shape[1] - length} primer step(s) + {length} generated)"
    )


def _parse_primer(text: str, steps: int) -> Any:
    """'random' -> None; a note name or class number -> the class; a .mid file -> the last ``steps`` classes.

    The forms are :func:`rltuner.domains.music.parse_primer`'s, shared with ``rltuner tune``.
    """
    from rltuner.domains.music import parse_primer
    from rltuner.errors import ConfigError

    try:
        value = parse_primer(text)
    except ConfigError as exc:
        raise ConfigError(f"--primer: {exc}") from None
    if not isinstance(value, Path):
        return value
    from rltuner.data.midi_io import midi_to_melody

    if steps < 1:
        raise InvalidMelodyError(f"--primer-steps must be at least 1, got {steps}")
    melody = midi_to_melody(value)
    if not (melody >= 2).any():  # 2 = the first note-on class; drums or silence only
        raise InvalidMelodyError(f"primer file {value} holds no notes")
    return melody[-steps:]


@contextlib.contextmanager
def _sampling_bar(n: int, unit: str, quiet: bool) -> Iterator[Callable[[int], None]]:
    """The sampler's progress callback: a bar over the ``n`` sequences on stderr (none with -q).

    The bar opens when the first batch is drawn, so an argument the sampler refuses (a temperature out of
    range, too many steps) is one error line with no bar before it.
    """
    from tqdm import tqdm

    bars: list[Any] = []

    def update(count: int) -> None:
        if not bars:
            bars.append(
                tqdm(total=n, unit=unit, desc="generate", disable=quiet, leave=False, dynamic_ncols=True)
            )
        bars[0].update(count)

    try:
        yield update
    finally:
        for bar in bars:
            bar.close()


def _generate_molecules(
    model_path: Path | None, n: int, temperature: float, seed: int | None, out: Path, device: str, quiet: bool
) -> None:
    from rltuner.devices import resolve_device
    from rltuner.domains import get_domain
    from rltuner.fileio import ensure_writable_dir, write_text_atomic

    get_domain("molecules").check_installed()
    from rltuner.domains.molecules.domain import load_smiles_model
    from rltuner.domains.molecules.metrics import canonical
    from rltuner.domains.molecules.sampling import sample_smiles

    if n < 1:
        raise click.BadParameter("must be at least 1", param_hint="-n")
    if not temperature > 0:
        raise click.BadParameter("must be positive", param_hint="--temperature")
    model, vocab = load_smiles_model(model_path, str(resolve_device(device)))
    folder = ensure_writable_dir(out)
    with _sampling_bar(n, "mol", quiet) as update:
        drawn = sample_smiles(model, vocab, n, seed=seed, temperature=temperature, progress=update)
    path = write_text_atomic(folder / "molecules.smi", "".join(s + "\n" for s in drawn["smiles"]))
    canon = canonical([s if not b else "" for s, b in zip(drawn["smiles"], drawn["broken"], strict=True)])
    valid = [c for c in canon if c]
    for s in drawn["smiles"][:3]:
        click.echo(s)
    click.echo(
        f"wrote {n:,} strings to {path}: {len(valid) / n:.1%} valid, {len(set(valid)):,} distinct molecules"
    )
