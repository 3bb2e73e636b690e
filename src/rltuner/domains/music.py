"""The music domain: the Note RNN prior, the music-theory reward (the task reward r_MT), melody primers, 32-step
melodies that never end early."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from rltuner.domains.base import Domain, PrimerSampler
from rltuner.encoding import (
    DEFAULT_MELODY_LENGTH,
    FIRST_NOTE_CLASS,
    NOTE_OFF,
    NUM_CLASSES,
    note_name_to_class,
    random_note_primers,
)
from rltuner.errors import ConfigError, InvalidMelodyError


def fixed_primer(token: int) -> PrimerSampler:
    """Every melody is primed with the same class ``token`` (0..37)."""
    if not 0 <= token < NUM_CLASSES:
        raise ConfigError(f"primer class {token} is outside 0..{NUM_CLASSES - 1}")

    def sample(n: int, rng: np.random.Generator) -> np.ndarray:
        return np.full(n, token, dtype=np.int64)

    return sample


def midi_primer_token(path: str | os.PathLike[str]) -> int:
    """The last note (note-on class) of the melody in a MIDI file, to prime melodies that continue it.

    Raises:
        MidiReadError: the file cannot be read.
        InvalidMelodyError: the file holds no note.
    """
    from rltuner.data.midi_io import midi_to_melody

    melody = np.asarray(midi_to_melody(path), dtype=np.int64)
    notes = melody[melody >= FIRST_NOTE_CLASS]
    if notes.size == 0:
        raise InvalidMelodyError(f"{path} holds no note to prime melodies with")
    return int(notes[-1])


PRIMER_FORMS = "'random', a note name (e.g. C4, F#3), a class number (0..37) or a .mid file"


def parse_primer(primer: str | int | os.PathLike[str] | None) -> int | Path | None:
    """Parse a primer argument, as ``tune`` and ``generate`` both take it.

    Args:
        primer: ``None`` or ``"random"``; a note name (``"C4"``); a class number (``14`` or ``"14"``);
            or a MIDI file path (``.mid`` / ``.midi``).

    Returns:
        None for random primers, the class (0..37) for a note or a class number, the path for a MIDI file
        (each caller reads it its own way: ``tune`` primes with its last note, ``generate`` with its last
        steps).

    Raises:
        ConfigError: anything else, or a class outside 0..37.
    """
    if primer is None:
        return None
    if isinstance(primer, int):
        token = primer
    else:
        text = str(primer).strip()
        if text.lower() == "random":
            return None
        if text.lower().endswith((".mid", ".midi")):
            return Path(text)
        if text.isdigit():
            token = int(text)
        else:
            try:
                return note_name_to_class(text)
            except InvalidMelodyError as exc:
                raise ConfigError(f"{text!r} is not a primer ({exc}); a primer is {PRIMER_FORMS}") from None
    if not 0 <= token < NUM_CLASSES:
        raise ConfigError(f"primer class {token} is outside 0..{NUM_CLASSES - 1}")
    if token < FIRST_NOTE_CLASS:
        raise ConfigError(
            f"primer class {token} is {'note-off' if token == NOTE_OFF else 'hold'}, not a note: the primer is "
            f"the melody's first note (classes {FIRST_NOTE_CLASS}..{NUM_CLASSES - 1}, or a name such as C4)"
        )
    return token


def primer_sampler(primer: str | int | os.PathLike[str] | None) -> tuple[PrimerSampler, str]:
    """The primer sampler of a primer argument (see :func:`parse_primer`); a MIDI file gives its last note.

    Returns:
        The sampler and a description for logs and checkpoints.
    """
    value = parse_primer(primer)
    if value is None:
        return random_note_primers, "random"
    if isinstance(value, int):
        return fixed_primer(value), f"fixed:{value}"
    token = midi_primer_token(value)
    return fixed_primer(token), f"midi:{value.name}:{token}"


SCORE_PER_STEP = (-10.0, 5.0)
"""r_MT per step mapped onto dap's score S = 0 and S = 1: about the Note RNN's mean (-9.5 on its samples) and
above the best tuned models' mean (3.7 for Q, 5.2 for RLOO on the paper's budget)."""


def music_score_range(length: int) -> tuple[float, float]:
    """The range of a melody's r_MT (summed over its ``length`` steps) that ``dap``'s score maps onto [0, 1]."""
    return SCORE_PER_STEP[0] * length, SCORE_PER_STEP[1] * length


def music_domain(
    prior: Any = None,
    *,
    primer: str | int | os.PathLike[str] | None = "random",
    length: int = DEFAULT_MELODY_LENGTH,
    reward_config: Any = None,
    device: str = "cpu",
    reward_primer: bool = False,
) -> Domain:
    """The melody domain of the paper.

    Args:
        prior: a Prior module, a checkpoint path, or None for the shipped Note RNN.
        primer: ``"random"`` (one uniformly random note-on per melody, fed as the first input and not part
            of the melody), a note name (``"C4"``) or class number, or a MIDI file whose last note primes every
            melody (see :func:`parse_primer`).
        length: melody length in sixteenth steps (32 in the paper).
        reward_config: a ``RewardConfig`` of the music-theory reward (None: the paper's rules).
        device: where to load a prior given by path.
        reward_primer: the music-theory reward judges each melody as heard, primer first, as Table 1 counts
            it (``MusicTheoryReward(hear_primer=True)``; TuneConfig's ``reward_primer``); false: the spec's.

    Raises:
        ConfigError: a prior whose vocabulary is not the 38 melody classes, or a bad primer.
        CheckpointError: the prior checkpoint cannot be loaded.
    """
    from rltuner.models.checkpoint import load_default_prior, load_prior

    if prior is None:
        model = load_default_prior(device)
    elif isinstance(prior, (str, os.PathLike)):
        model = load_prior(prior, device)[0]
    else:
        model = prior
    sampler, primer_desc = primer_sampler(primer)

    import dataclasses

    from rltuner.config import to_dict
    from rltuner.rewards.music_theory import MusicTheoryReward, RewardConfig

    cfg = reward_config if reward_config is not None else RewardConfig()
    if cfg.length != length:  # the tonic and extremes rules depend on the melody length
        cfg = dataclasses.replace(cfg, length=length)

    def make_reward() -> Any:
        return MusicTheoryReward(cfg, hear_primer=reward_primer)

    def reward_parts(actions: Any, mask: Any, primers: Any) -> dict[str, float]:
        # every melody plays all its steps
        parts = make_reward().score(actions, by_rule=True, primers=primers)
        assert isinstance(parts, dict)
        return {name: float(values.mean()) for name, values in parts.items()}

    def with_primer_reward() -> Domain:
        return music_domain(model, primer=primer, length=length, reward_config=cfg, reward_primer=True)

    domain = Domain(
        name="music", vocab_size=NUM_CLASSES, prior=model, make_reward=make_reward, sample_primers=sampler,
        episode_length=length, meta={"primer": primer_desc, "melody_length": length},
        reward_config={"music_theory": to_dict(cfg)}, score_range=music_score_range(length),
        reward_parts=reward_parts, reward_hears_primer=reward_primer, with_primer_reward=with_primer_reward,
    )  # fmt: skip
    domain.validate()
    return domain
