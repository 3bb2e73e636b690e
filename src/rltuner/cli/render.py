"""``rltuner render``: melodies from .mid / .npy files as MIDI, WAV and piano-roll PNG.

Every input is read and checked before anything is written, so a bad input costs one clear error and no
half-finished output. Each file is written atomically; Ctrl-C keeps the files already written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from rltuner.cli.options import quiet_option
from rltuner.errors import ConfigError, InvalidMelodyError

MIDI_SUFFIXES = (".mid", ".midi")
MAX_ROLL_PANELS = 16  # melodies per piano-roll picture: more are unreadable


@dataclass(frozen=True)
class RenderItem:
    """One melody to render: its classes (T,) and the file stem its outputs get."""

    stem: str
    classes: Any  # np.ndarray (T,) int64


def load_npy_melodies(path: Path) -> Any:
    """Melodies of a .npy file as an (N, T) int64 array ((T,) becomes (1, T)); clear errors otherwise."""
    import numpy as np

    from rltuner.encoding import validate_classes

    try:
        from rltuner.data.arrays import load_npy

        data = load_npy(path, kinds="iubf")  # header checked before allocating
    except (OSError, ValueError, EOFError) as exc:
        raise InvalidMelodyError(f"cannot read {path} as a .npy array of melodies ({exc})") from None
    if not isinstance(data, np.ndarray):  # an .npz archive saved under a .npy name
        raise InvalidMelodyError(f"{path} is not a single .npy array of melodies")
    try:
        arr = validate_classes(data)
    except InvalidMelodyError as exc:
        raise InvalidMelodyError(f"{path}: {exc}") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InvalidMelodyError(
            f"{path} holds an array of shape {arr.shape}; expected (N, T) or (T,) melodies"
        )
    return arr


def _expand(inputs: tuple[Path, ...]) -> list[Path]:
    """Files to read: each file as given, each folder's .mid/.midi files (sorted)."""
    files: list[Path] = []
    for path in inputs:
        if not path.exists():
            raise InvalidMelodyError(f"input {path} does not exist")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file())
            if not found:
                raise InvalidMelodyError(f"folder {path} holds no .mid or .midi files")
            files.extend(found)
        elif path.suffix.lower() in (*MIDI_SUFFIXES, ".npy"):
            files.append(path)
        else:
            raise InvalidMelodyError(
                f"{path}: expected a .mid/.midi file, a folder of them, or a .npy of melodies"
            )
    return files


def collect_items(inputs: tuple[Path, ...], limit: int) -> list[tuple[Path, str, list[RenderItem]]]:
    """Read every input: per input file, its output stem and the melodies to render (``limit`` per .npy; 0: all).

    Raises:
        InvalidMelodyError: a missing path, an unsupported file, a bad .npy array.
        MidiReadError: an unreadable MIDI file.
    """
    from rltuner.data.midi_io import midi_to_melody

    groups: list[tuple[Path, str, list[RenderItem]]] = []
    used: set[str] = set()
    for path in _expand(inputs):
        stem = _unique(path.stem, used)
        if path.suffix.lower() == ".npy":
            arr = load_npy_melodies(path)
            shown = arr if limit == 0 else arr[:limit]
            width = max(3, len(str(len(shown) - 1)))
            items = [RenderItem(f"{stem}_{i:0{width}d}", m) for i, m in enumerate(shown)]
        else:
            items = [RenderItem(stem, midi_to_melody(path))]
        groups.append((path, stem, items))
    return groups


def _unique(stem: str, used: set[str]) -> str:
    # Two inputs a/x.mid and b/x.mid would write the same outputs: the second becomes x_2.
    name, k = stem, 2
    while name in used:
        name, k = f"{stem}_{k}", k + 1
    used.add(name)
    return name


@click.command(
    "render",
    epilog="""
Examples:

\b
  rltuner render samples/q/melodies.npy              # MIDI + WAV + PNG of the first 16 -> rendered/
  rltuner render samples/q/melodies.npy --key G --out listen/
  rltuner render tune.mid other.mid --wav --out wav/
  rltuner render songs/ --png
""",
)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--midi", "want_midi", is_flag=True, help="Write MIDI files (with none of --midi/--wav/--png: all three)."
)
@click.option(
    "--wav", "want_wav", is_flag=True, help="Render WAV audio (SoundFont piano, or the --program chosen)."
)
@click.option(
    "--png", "want_png", is_flag=True, help="Draw a piano roll per input (at most 16 melodies each)."
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("rendered"), show_default=True,
    help="Output folder (created).",
)  # fmt: skip
@click.option("--tempo", type=float, default=120.0, show_default=True, help="Quarter notes per minute.")
@click.option(
    "--program", type=int, default=0, show_default=True,
    help="General MIDI program 0..127 (0 acoustic grand, 40 violin, 73 flute).",
)  # fmt: skip
@click.option(
    "--key",
    default=None,
    help="Transpose the C-major/A-minor melodies to this key (G, Bb, Em), nearest octave.",
)
@click.option("--transpose", type=int, default=0, show_default=True, help="Extra shift in semitones.")
@click.option("--velocity", type=int, default=90, show_default=True, help="Note loudness 1..127 (MIDI).")
@click.option(
    "--limit", type=int, default=16, show_default=True,
    help="Render at most this many melodies of each .npy input (0: all of them).",
)  # fmt: skip
@click.option("--sample-rate", type=int, default=44100, show_default=True, help="WAV samples per second.")
@quiet_option()
def render(
    inputs: tuple[Path, ...],
    want_midi: bool,
    want_wav: bool,
    want_png: bool,
    out: Path,
    tempo: float,
    program: int,
    key: str | None,
    transpose: int,
    velocity: int,
    limit: int,
    sample_rate: int,
    quiet: bool,
) -> None:
    """Render melodies from INPUT files (.mid/.midi, folders of them, .npy arrays of shape (N, T) or (T,)).

    Writes OUT/<name>.mid, OUT/<name>.wav and OUT/<input>.png; melodies of a .npy get <input>_000, _001, ...
    """
    from tqdm import tqdm

    from rltuner.data.audio import render_wav
    from rltuner.data.midi_io import check_output_options, total_shift, write_midi
    from rltuner.data.pianoroll import plot_piano_roll
    from rltuner.fileio import ensure_writable_dir

    if limit < 0:
        raise ConfigError(f"--limit must be >= 0 (0: all melodies), got {limit}")
    check_output_options(tempo, program, velocity)
    total_shift(transpose, key)  # rejects an unknown --key before any work
    if not 8000 <= sample_rate <= 192000:
        raise ConfigError(f"--sample-rate must be 8000..192000 Hz, got {sample_rate}")
    if not (want_midi or want_wav or want_png):
        want_midi = want_wav = want_png = True
    groups = collect_items(inputs, limit)
    folder = ensure_writable_dir(out)
    inputs_resolved = {p.resolve() for p, _, _ in groups}
    if want_midi:
        clash = [folder / f"{i.stem}.mid" for _, _, items in groups for i in items]
        for target in clash:
            if target.resolve() in inputs_resolved:
                raise ConfigError(
                    f"writing {target} would overwrite an input file; choose another --out folder"
                )

    options: dict[str, Any] = {"tempo": tempo, "program": program, "transpose": transpose, "key": key}
    written: list[Path] = []
    total = sum(len(items) for _, _, items in groups)
    with tqdm(total=total, unit="melody", desc="render", disable=True if quiet else None, leave=False) as bar:
        for path, stem, items in groups:
            for item in items:
                if want_midi:
                    written.append(
                        write_midi(item.classes, folder / f"{item.stem}.mid", velocity=velocity, **options)
                    )
                if want_wav:
                    written.append(
                        render_wav(
                            item.classes, folder / f"{item.stem}.wav", sample_rate=sample_rate, **options
                        )
                    )
                bar.update(1)
            if want_png and items:
                shown = items[:MAX_ROLL_PANELS]
                titles = [i.stem for i in shown] if len(shown) > 1 else None
                written.append(
                    plot_piano_roll(
                        [i.classes for i in shown], folder / f"{stem}.png", titles=titles, title=path.name
                    )
                )
    click.echo(f"wrote {len(written)} file(s) for {total} melod{'y' if total == 1 else 'ies'} to {folder}")
