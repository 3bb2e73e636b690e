"""Domain exceptions.

Every error a user can cause derives from :class:`RLTunerError`; the CLI turns it into one clear message and a
non-zero exit instead of a traceback.
"""

from __future__ import annotations


class RLTunerError(Exception):
    """Base class of every error that is the user's input, not a bug."""


class InvalidMelodyError(RLTunerError, ValueError):
    """A melody holds a class outside 0..37, is empty or ragged, or is otherwise malformed."""


class MelodyRangeError(InvalidMelodyError):
    """A melody's pitches span more than the three octaves the encoding can hold."""


class MidiReadError(RLTunerError):
    """A MIDI or ABC file could not be read (missing, corrupt, truncated, not MIDI)."""


class DatasetError(RLTunerError):
    """A dataset file is missing, corrupt or of another format version."""


class CheckpointError(RLTunerError):
    """A checkpoint is missing, corrupt, of another kind, or does not fit the model it is loaded into."""


class ConfigError(RLTunerError, ValueError):
    """A configuration value is nonsense (a negative rate, an unknown name, ...)."""


class InputLimitError(RLTunerError, ValueError):
    """An input exceeds a documented limit (``rltuner.limits``): too long, too many notes, too large a model."""


class ReadTimeoutError(RLTunerError):
    """Reading one input took longer than its time limit."""


class TrainingDivergedError(RLTunerError):
    """The loss or the weights became NaN or infinite during training (the run stops, good files are kept)."""
