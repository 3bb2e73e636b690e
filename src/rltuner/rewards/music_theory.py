"""The music-theory reward r_MT of RL Tuner (Jaques et al. 2017, section 3.2; ``shared/spec/music-theory-reward.md``).

Two ways to compute it, one meaning:

* incremental, :class:`MusicTheoryReward` (``reset`` / ``step``): the RL environment's hot path. B melodies
  each receive one new class; the B rewards come back and the per-melody state (:class:`RewardState`, one
  explicit structure of numpy arrays) advances exactly once;
* whole melodies, :func:`music_theory_rewards`: per-step rewards of N melodies, computed by running the
  incremental path over the steps (vectorised over melodies, a loop over steps), so both agree exactly.

The nine rules are summed in a fixed order (``RULE_NAMES``), then any user-registered rules
(:func:`register_rule`). Each rule's value is multiplied by its weight (0 switches it off).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rltuner.config import check_types, field
from rltuner.encoding import FIRST_NOTE_CLASS, NO_EVENT, NOTE_OFF, NUM_CLASSES, validate_classes
from rltuner.errors import ConfigError, InvalidMelodyError
from rltuner.rewards.rules import (
    BITS_PER_CLASS,
    IV_FIFTH_IN_KEY,
    IV_HOLD,
    IV_HOLD_AFTER,
    IV_NONE,
    IV_REST,
    IV_REST_AFTER,
    IV_THIRD_IN_KEY,
    NUM_INTERVAL_CLASSES,
    NUM_PLAIN,
    BoolArray,
    FloatArray,
    IntArray,
    KeyTables,
    autocorrelation_terms,
    distinct_real_notes,
    exact_threshold,
    interval_class,
    key_tables,
    leap_transition,
)

RULE_NAMES: tuple[str, ...] = (
    "key",
    "tonic",
    "repetition",
    "autocorrelation",
    "motif",
    "repeated_motif",
    "intervals",
    "leaps",
    "extremes",
)

#: A user rule: ``fn(history (B, t) int64 — the composition so far, action (B,) int64, t, length) -> (B,)``.
CustomRule = Callable[[IntArray, IntArray, int, int], FloatArray]

_REGISTRY: dict[str, tuple[CustomRule, float]] = {}

_CHUNK_ROWS = 4096  # whole-melody scoring works on blocks of rows that stay in the CPU cache


@dataclass(frozen=True)
class RuleWeights:
    """Multiplier of each rule's value (1 = the spec; 0 switches the rule off)."""

    key: float = field(1.0, "Weight of rule 1, the penalty for a note outside the key.")
    tonic: float = field(1.0, "Weight of rule 2, the bonus for the tonic at the start and end.")
    repetition: float = field(1.0, "Weight of rule 3, the penalty for excessive repetition.")
    autocorrelation: float = field(1.0, "Weight of rule 4, the penalty for autocorrelation at lags 1-3.")
    motif: float = field(1.0, "Weight of rule 5, the bonus for a motif ending at this step.")
    repeated_motif: float = field(1.0, "Weight of rule 6, the bonus for repeating an earlier motif.")
    intervals: float = field(1.0, "Weight of rule 7, the preferred-interval table.")
    leaps: float = field(1.0, "Weight of rule 8, leap resolution (+) and double leaps (-).")
    extremes: float = field(1.0, "Weight of rule 9, the bonus for a unique highest and lowest note.")


@dataclass(frozen=True)
class RewardConfig:
    """Every constant of r_MT. The defaults reproduce the paper's reward exactly (C major, L = 32)."""

    key: str = field("C", "Tonic of the key the rules judge against (C, G, F#, Bb, ...).")
    mode: Literal["major", "minor"] = field("major", "Mode of the key: major or minor.")
    length: int = field(32, "Melody length L (the tonic rule's last bar and the last step of rule 9).")
    weights: RuleWeights = dataclasses.field(
        default_factory=RuleWeights, metadata={"help": "Per-rule multipliers (0 switches a rule off)."}
    )
    key_penalty: float = field(1.0, "Rule 1: subtracted for a note outside the key.")
    tonic_bonus: float = field(
        3.0, "Rule 2: bonus for the tonic on step 0 and L-4, and for holding/resting after."
    )
    repetition_penalty: float = field(100.0, "Rule 3: subtracted for an excessively repeated note.")
    repeat_limit: int = field(4, "Rule 3: more repeats than this (no hold or rest between) are excessive.")
    repeat_limit_with_gaps: int = field(6, "Rule 3: more repeats than this (with holds/rests) are excessive.")
    rest_repeat_limit: int = field(1, "Rule 3: more rests than this since the last note are excessive.")
    autocorrelation_lags: tuple[int, ...] = field(
        (1, 2, 3), "Rule 4: the lags whose autocorrelation is penalised."
    )
    autocorrelation_threshold: float = field(0.15, "Rule 4: |rho| above this is penalised (tested exactly).")
    autocorrelation_scale: float = field(3.0, "Rule 4: the penalty is this times |rho|.")
    motif_length: int = field(8, "Rules 5-6: window length of a motif (at most 10).")
    motif_min_notes: int = field(3, "Rules 5-6: distinct real notes a window needs to be a motif.")
    motif_bonus: float = field(3.0, "Rule 5: bonus for a motif ending at this step.")
    motif_complexity_bonus: float = field(0.3, "Rule 5: extra bonus per distinct note above motif_min_notes.")
    repeated_motif_bonus: float = field(4.0, "Rule 6: bonus for a motif that occurred before.")
    repeated_motif_complexity_bonus: float = field(
        1.0, "Rule 6: extra bonus per distinct note above the minimum."
    )
    interval_scale: float = field(5.0, "Rule 7: every interval reward is multiplied by this.")
    interval_rest: float = field(0.05, "Rule 7: a rest.")
    interval_hold: float = field(0.075, "Rule 7: a hold.")
    interval_rest_after_tonic_or_fifth: float = field(0.15, "Rule 7: a rest after the tonic or fifth.")
    interval_hold_after_tonic_or_fifth: float = field(0.3, "Rule 7: a hold after the tonic or fifth.")
    interval_fifth_in_key: float = field(0.1, "Rule 7: a fifth from the tonic or the fifth.")
    interval_third_in_key: float = field(0.15, "Rule 7: the key's third from the tonic or the third.")
    interval_second: float = field(0.08, "Rule 7: a major second (2 semitones).")
    interval_third: float = field(0.09, "Rule 7: a major third (4) not counted as in-key.")
    interval_fourth: float = field(0.07, "Rule 7: a fourth (5).")
    interval_fifth: float = field(0.02, "Rule 7: a fifth (7) not counted as in-key.")
    interval_sixth: float = field(0.05, "Rule 7: a major sixth (9).")
    interval_seventh: float = field(-0.3, "Rule 7: a major seventh (11).")
    interval_over_octave: float = field(-1.0, "Rule 7: more than an octave (> 12).")
    leap_size: int = field(7, "Rule 8: an interval of at least this many semitones is a leap.")
    leap_min_steps_between: int = field(6, "Rule 8: leaping back resolves only after more steps than this.")
    leap_reward: float = field(5.0, "Rule 8: bonus for a resolved leap, penalty for a doubled one.")
    extremes_bonus: float = field(3.0, "Rule 9: bonus each for a unique highest and a unique lowest note.")

    def validate(self) -> None:
        """Raise :class:`ConfigError` for nonsense values."""
        check_types(self)
        key_tables(self.key, self.mode)
        if self.length < 1:
            raise ConfigError(f"length must be at least 1, got {self.length}")
        if not 1 <= self.motif_length <= 10:
            raise ConfigError(f"motif_length must be in 1..10, got {self.motif_length}")
        if self.motif_min_notes < 1:
            raise ConfigError(f"motif_min_notes must be at least 1, got {self.motif_min_notes}")
        if min(self.repeat_limit, self.repeat_limit_with_gaps, self.rest_repeat_limit) < 0:
            raise ConfigError("repetition limits must be >= 0")
        if not self.autocorrelation_lags or min(self.autocorrelation_lags) < 1:
            raise ConfigError(f"autocorrelation_lags must be positive, got {self.autocorrelation_lags}")
        if self.autocorrelation_threshold < 0:
            raise ConfigError("autocorrelation_threshold must be >= 0")
        if self.leap_size < 1 or self.leap_min_steps_between < 0:
            raise ConfigError("leap_size must be >= 1 and leap_min_steps_between >= 0")
        for name, value in dataclasses.asdict(self.weights).items():
            if not np.isfinite(value):
                raise ConfigError(f"weight of rule {name!r} must be a finite number, got {value}")

    def interval_table(self) -> FloatArray:
        """(NUM_INTERVAL_CLASSES,) reward of each rule-7 interval class, already multiplied by the scale."""
        base = np.zeros(NUM_INTERVAL_CLASSES)
        base[13:NUM_PLAIN] = self.interval_over_octave
        plain = {
            2: self.interval_second,
            4: self.interval_third,
            5: self.interval_fourth,
            7: self.interval_fifth,
        }
        plain.update({9: self.interval_sixth, 11: self.interval_seventh})
        for d, value in plain.items():
            base[d] = value
        base[IV_NONE] = 0.0
        base[IV_REST] = self.interval_rest
        base[IV_HOLD] = self.interval_hold
        base[IV_REST_AFTER] = self.interval_rest_after_tonic_or_fifth
        base[IV_HOLD_AFTER] = self.interval_hold_after_tonic_or_fifth
        base[IV_FIFTH_IN_KEY] = self.interval_fifth_in_key
        base[IV_THIRD_IN_KEY] = self.interval_third_in_key
        # the original multiplies each Python float by the scale; element-wise float64 products are the same
        return np.array([float(v) * self.interval_scale for v in base.tolist()])


@dataclass
class RewardState:
    """Everything r_MT remembers about B melodies in progress; :meth:`MusicTheoryReward.step` advances it.

    Attributes:
        history: (B, L) int64, the classes played so far in columns 0..t-1 (the rest is undefined).
        t: the next step to be played (0 after ``reset``; ``offset`` after a reset with primers).
        length: L (L + ``offset`` with primers: the melody as heard).
        offset: the primer steps at the start of ``history`` (0: none): played through without reward, judged
            by every rule as part of the melody except the tonic rule, whose steps count from the first
            generated one (``MusicTheoryReward(hear_primer=True)``).
        direction: (B,) rule 8: 0, or +1/-1 after an unresolved upward/downward leap.
        leapt_from: (B,) rule 8: the note that leap started from (-1: none).
        since: (B,) rule 8: steps since the last leap.
        prev_note: (B,) the last real note played (-1: none yet).
        rep_count: (B,) rule 3: occurrences of ``prev_note`` in the run of {prev_note, HOLD, REST} that ends
            the composition.
        rep_gap: (B,) rule 3: whether that run holds a HOLD or REST.
        tail_holds: (B,) rule 3: HOLDs since the last real note (since the start if none).
        tail_rests: (B,) rule 3: RESTs since the last real note.
        sum_x: (B,) rule 4: sum of the classes so far.
        sum_x2: (B,) rule 4: sum of their squares.
        lag_products: (B, K) rule 4: sum of x_i * x_{i-lag} for each of the K lags.
        window_codes: (B, L) rule 6: the last ``motif_length`` classes ending at each step, packed 6 bits each.
    """

    history: IntArray
    t: int
    length: int
    direction: IntArray
    leapt_from: IntArray
    since: IntArray
    prev_note: IntArray
    rep_count: IntArray
    rep_gap: BoolArray
    tail_holds: IntArray
    tail_rests: IntArray
    sum_x: IntArray
    sum_x2: IntArray
    lag_products: IntArray
    window_codes: IntArray
    offset: int = 0

    @property
    def batch_size(self) -> int:
        return int(self.history.shape[0])


def register_rule(name: str, fn: CustomRule, *, weight: float = 1.0, replace: bool = False) -> None:
    """Add a user rule to r_MT: it takes part in both paths, ``by_rule`` output, scoring and tuning.

    Rewards built after the call (:class:`MusicTheoryReward`, :func:`music_theory_rewards`) include it.

    Args:
        name: the rule's key in ``by_rule`` output (an identifier, not one of ``RULE_NAMES``).
        fn: ``fn(history, action, t, length) -> (B,) float64`` with ``history`` (B, t) int64 the composition
            so far (read-only), ``action`` (B,) int64 the class played at step ``t``, ``length`` = L.
        weight: default multiplier of the rule's value (a ``weights`` mapping may override it).
        replace: allow replacing a rule of the same name.

    Raises:
        ConfigError: bad name, or a rule of that name exists and ``replace`` is False.
    """
    if not name.isidentifier() or name in RULE_NAMES or name == "total":
        raise ConfigError(f"rule name {name!r} must be an identifier other than the built-in rule names")
    if name in _REGISTRY and not replace:
        raise ConfigError(f"a rule named {name!r} is already registered (pass replace=True to replace it)")
    if not callable(fn):
        raise ConfigError(f"rule {name!r} must be a function")
    _REGISTRY[name] = (fn, float(weight))


def unregister_rule(name: str) -> None:
    """Remove a user rule (no error if it is not registered)."""
    _REGISTRY.pop(name, None)


def registered_rules() -> tuple[str, ...]:
    """Names of the user rules, in the order they are summed (after the nine built-in rules)."""
    return tuple(_REGISTRY)


class MusicTheoryReward:
    """r_MT as a batched, incremental reward (the ``SequenceReward`` protocol of docs/architecture.md).

    Args:
        config: constants and weights (default: the paper's reward, C major, L = 32).
        weights: rule name -> multiplier, overriding ``config.weights`` and user rules' weights.
        hear_primer: judge each melody as it is heard and as Table 1 counts it, primer first (TuneConfig's
            ``reward_primer``; docs/rewards.md): :meth:`reset` then needs the primers and plays them through
            without reward, so generated step k earns what the rules give the melody primer + steps at its
            step k + 1, with L + 1 steps for the extremes rule, except the tonic rule, which (like Table 1's
            "starting with tonic" row) judges the generated steps: their first and their step L - 4 on.
            False (the default): the spec's reward, which never sees the primer.

    Raises:
        ConfigError: invalid config or an unknown rule name in ``weights``.
    """

    def __init__(
        self,
        config: RewardConfig | None = None,
        *,
        weights: Mapping[str, float] | None = None,
        hear_primer: bool = False,
    ):
        self.hear_primer = bool(hear_primer)
        self.config = config if config is not None else RewardConfig()
        self.config.validate()
        cfg = self.config
        self.tables: KeyTables = key_tables(cfg.key, cfg.mode)
        self.custom_rules: tuple[tuple[str, CustomRule], ...] = tuple(
            (n, f) for n, (f, _) in _REGISTRY.items()
        )
        self.rule_names: tuple[str, ...] = RULE_NAMES + tuple(n for n, _ in self.custom_rules)
        merged = dataclasses.asdict(cfg.weights) | {n: w for n, (_, w) in _REGISTRY.items()}
        for name, value in (weights or {}).items():
            if name not in merged:
                raise ConfigError(f"unknown rule {name!r} in weights; rules: {', '.join(self.rule_names)}")
            merged[name] = float(value)
        self.weights: dict[str, float] = merged
        self._key_values = np.where(self.tables.in_key[:NUM_CLASSES], 0.0, -cfg.key_penalty)
        self._interval_values = cfg.interval_table()
        threshold = exact_threshold(cfg.autocorrelation_threshold)
        self._thr_num, self._thr_den = threshold.numerator, threshold.denominator
        w = cfg.motif_length
        m = cfg.motif_min_notes
        self._motif_values = np.array(
            [
                cfg.motif_bonus + max(cfg.motif_complexity_bonus * (u - m), 0) if u >= m else 0.0
                for u in range(w + 1)
            ]
        )
        self._repeat_values = np.array(
            [
                cfg.repeated_motif_bonus + max(cfg.repeated_motif_complexity_bonus * (u - m), 0)
                if u >= m
                else 0.0
                for u in range(w + 1)
            ]
        )
        self._leap_values = np.array([-cfg.leap_reward, 0.0, cfg.leap_reward])  # indexed by outcome + 1
        self._code_mask = np.int64((1 << (BITS_PER_CLASS * w)) - 1)
        # The same tables as Python lists, for the one-melody path (_advance_one).
        self._code_mask_int = (1 << (BITS_PER_CLASS * w)) - 1
        self._key_list: list[float] = self._key_values.tolist()
        self._interval_list: list[float] = self._interval_values.tolist()
        self._motif_list: list[float] = self._motif_values.tolist()
        self._repeat_list: list[float] = self._repeat_values.tolist()
        self._leap_list: list[float] = self._leap_values.tolist()

    # ----------------------------------------------------------------------------------------- incremental
    def reset(self, batch_size: int, primers: object = None) -> RewardState:
        """A fresh state for ``batch_size`` melodies of ``config.length`` steps.

        Args:
            batch_size: B.
            primers: (B,) or (B, P) classes fed before each melody (the env's first inputs). A reward built
                with ``hear_primer=True`` plays them through without reward (the state's ``offset`` = P);
                the spec's reward (the default) ignores them.

        Raises:
            InvalidMelodyError: ``batch_size < 1``; with ``hear_primer``, primers missing, of the wrong
                shape or outside 0..37.
        """
        if batch_size < 1:
            raise InvalidMelodyError(f"batch_size must be at least 1, got {batch_size}")
        if not self.hear_primer:
            return self._fresh(int(batch_size), self.config.length)
        if primers is None:
            raise InvalidMelodyError("this reward judges the primer (hear_primer): reset needs the primers")
        given = validate_classes(primers)
        p = given[:, None] if given.ndim == 1 else given
        if p.ndim != 2 or p.shape[0] != batch_size or p.shape[1] < 1:
            raise InvalidMelodyError(
                f"expected primers of shape ({batch_size},) or ({batch_size}, P), got {given.shape}"
            )
        state = self._fresh(int(batch_size), self.config.length + p.shape[1])
        for column in p.T:  # the primer steps: judged as part of the melody, their own values dropped
            if batch_size == 1 and not self.custom_rules:
                self._advance_one(state, np.ascontiguousarray(column))
            else:
                self._advance(state, np.ascontiguousarray(column))
        state.offset = p.shape[1]
        return state

    def _fresh(self, b: int, length: int) -> RewardState:

        def zeros() -> IntArray:
            return np.zeros(b, dtype=np.int64)

        return RewardState(
            history=np.zeros((b, length), dtype=np.int64),
            t=0,
            length=length,
            direction=zeros(),
            leapt_from=np.full(b, -1, dtype=np.int64),
            since=zeros(),
            prev_note=np.full(b, -1, dtype=np.int64),
            rep_count=zeros(),
            rep_gap=np.zeros(b, dtype=bool),
            tail_holds=zeros(),
            tail_rests=zeros(),
            sum_x=zeros(),
            sum_x2=zeros(),
            lag_products=np.zeros((b, len(self.config.autocorrelation_lags)), dtype=np.int64),
            window_codes=np.zeros((b, length), dtype=np.int64),
        )

    def step(self, state: RewardState, actions: np.ndarray) -> FloatArray:
        """Reward of playing ``actions`` (B,) int64 at step ``state.t``; advances ``state`` by one step.

        Returns:
            (B,) float64 r_MT (unscaled: not yet divided by the RL tuner's ``c``).

        Raises:
            InvalidMelodyError: wrong shape, a class outside 0..37, or the melodies already have L steps.
        """
        if state.batch_size == 1 and not self.custom_rules:
            return np.array([sum_in_order(self._advance_one(state, actions))])
        values = self._advance(state, actions)
        total = values[0]
        for v in values[1:]:
            total = total + v
        return total

    def step_by_rule(self, state: RewardState, actions: np.ndarray) -> dict[str, FloatArray]:
        """Like :meth:`step`, but returns each rule's (B,) weighted value (they sum to ``step``'s total)."""
        if state.batch_size == 1 and not self.custom_rules:
            one = self._advance_one(state, actions)
            return {name: np.array([v]) for name, v in zip(self.rule_names, one, strict=True)}
        return dict(zip(self.rule_names, self._advance(state, actions), strict=True))

    def _advance_one(self, s: RewardState, actions: np.ndarray) -> list[float]:
        """:meth:`_advance` for one melody (B = 1) in plain Python scalars: the same rules, the same float64
        operations in the same order, so the same values to the last bit, at a fraction of the cost (numpy's
        per-call overhead dominates at B = 1: the paper's schedule plays one melody at a time).

        Returns the nine weighted rule values as floats; advances ``s`` exactly as :meth:`_advance` does.
        """
        arr = np.asarray(actions)
        if arr.shape != (1,) or arr.dtype != np.int64:
            arr = self._check_actions(s, arr)
        a = int(arr[0])
        if s.t >= s.length or not 0 <= a < NUM_CLASSES:
            self._check_actions(s, arr)  # raises the usual error
        cfg = self.config
        t, length = s.t, s.length
        prev = int(s.prev_note[0])
        real = a >= FIRST_NOTE_CLASS
        hold = a == NO_EVENT
        rest = a == NOTE_OFF
        s.history[0, t] = a
        hist: list[int] = s.history[0, : t + 1].tolist()

        v_key = self._key_list[a]

        f = length - 4
        if t == s.offset or t == f:
            v_tonic = cfg.tonic_bonus if a == self.tables.tonic else 0.0
        elif t == f + 1:
            v_tonic = cfg.tonic_bonus if hold else 0.0
        elif t > f + 1:
            v_tonic = cfg.tonic_bonus if hold or rest else 0.0
        else:
            v_tonic = 0.0

        rep_count, rep_gap = int(s.rep_count[0]), bool(s.rep_gap[0])
        tail_holds, tail_rests = int(s.tail_holds[0]), int(s.tail_rests[0])
        same = a == prev
        if hold:
            n, gap = tail_holds, tail_rests > 0
        elif rest:
            n, gap = tail_rests, tail_holds > 0
        else:
            n, gap = (rep_count if same else 0), rep_gap
        fire = n > (cfg.repeat_limit_with_gaps if gap else cfg.repeat_limit)
        fire = fire or (rest and n > cfg.rest_repeat_limit)
        v_rep = -cfg.repetition_penalty if fire else 0.0
        tail_any = (tail_holds + tail_rests) > 0
        s.rep_count[0] = rep_count + 1 if same else (1 if real else rep_count)
        s.rep_gap[0] = (rep_gap if same else tail_any) if real else True
        s.tail_holds[0] = 0 if real else tail_holds + hold
        s.tail_rests[0] = 0 if real else tail_rests + rest
        if real:
            s.prev_note[0] = a

        n_len = t + 1
        sum_x = int(s.sum_x[0]) + a
        sum_x2 = int(s.sum_x2[0]) + a * a
        s.sum_x[0], s.sum_x2[0] = sum_x, sum_x2
        penalty = 0.0
        for k, lag in enumerate(cfg.autocorrelation_lags):
            if t < lag:
                continue
            lag_product = int(s.lag_products[0, k]) + a * hist[t - lag]
            s.lag_products[0, k] = lag_product
            head, tail = sum(hist[:lag]), sum(hist[n_len - lag : n_len])
            num = n_len * n_len * lag_product - n_len * sum_x * (2 * sum_x - head - tail)
            num += (n_len - lag) * sum_x * sum_x
            den = n_len * (n_len * sum_x2 - sum_x * sum_x)
            if self._thr_den * abs(num) > self._thr_num * den:
                penalty = penalty + cfg.autocorrelation_scale * abs(num / max(den, 1))
        v_auto = 0.0 - penalty

        w = cfg.motif_length
        code = ((int(s.window_codes[0, t - 1]) << BITS_PER_CLASS) | a) & self._code_mask_int if t else a
        s.window_codes[0, t] = code
        v_motif = v_repeat = 0.0
        if t >= w - 1:
            u = len({c for c in hist[t - w + 1 :] if c >= FIRST_NOTE_CLASS})
            v_motif = self._motif_list[u]
            earlier: list[int] = s.window_codes[0, w - 1 : t - w + 1].tolist() if t >= 2 * w - 1 else []
            if u >= cfg.motif_min_notes and code in earlier:
                v_repeat = self._repeat_list[u]

        v_int = self._interval_list[self._interval_class_one(prev, a)]

        v_leap = 0.0
        if t:
            direction, leapt_from, since = int(s.direction[0]), int(s.leapt_from[0]), int(s.since[0])
            leap = real and prev >= 0 and abs(a - prev) >= cfg.leap_size
            dir_now = 1 if a > prev else -1
            pending = direction != 0
            back = leap and pending and dir_now != direction
            doubled = leap and pending and dir_now == direction
            gradual = (
                real
                and not leap
                and ((direction == 1 and a <= leapt_from) or (direction == -1 and a >= leapt_from))
            )
            resolved = (back and since > cfg.leap_min_steps_between) or gradual
            if leap and not pending:
                s.direction[0], s.leapt_from[0] = dir_now, prev
            elif back or gradual:
                s.direction[0], s.leapt_from[0] = 0, -1
            s.since[0] = 0 if leap else since + 1
            v_leap = self._leap_list[int(resolved) - int(doubled) + 1]

        v_ext = 0.0
        if t == length - 1:
            top = max(hist)
            low = min(c if c >= FIRST_NOTE_CLASS else NUM_CLASSES for c in hist)
            v_ext = (cfg.extremes_bonus if hist.count(top) == 1 else 0.0) + (
                cfg.extremes_bonus if hist.count(low) == 1 else 0.0
            )

        s.t = t + 1
        values = [v_key, v_tonic, v_rep, v_auto, v_motif, v_repeat, v_int, v_leap, v_ext]
        for i, name in enumerate(RULE_NAMES):
            weight = self.weights[name]
            if weight != 1.0:
                values[i] = 0.0 if weight == 0.0 else values[i] * weight
        return values

    def _interval_class_one(self, prev: int, a: int) -> int:
        """:func:`~rltuner.rewards.rules.interval_class` of one step."""
        if prev < 0:
            return IV_NONE
        after = bool(self.tables.tonic_or_fifth[prev])
        if a == NOTE_OFF:
            return IV_REST_AFTER if after else IV_REST
        if a == NO_EVENT:
            return IV_HOLD_AFTER if after else IV_HOLD
        d = abs(a - prev)
        if d == 7 and after:
            return IV_FIFTH_IN_KEY
        if d == self.tables.third and self.tables.tonic_or_third[prev]:
            return IV_THIRD_IN_KEY
        return d

    def _advance(self, s: RewardState, actions: np.ndarray) -> list[FloatArray]:
        a = self._check_actions(s, actions)
        cfg = self.config
        t, length = s.t, s.length
        prev = s.prev_note
        real = a >= FIRST_NOTE_CLASS
        hold = a == NO_EVENT
        rest = a == NOTE_OFF
        s.history[:, t] = a

        # Rule 1: key.
        v_key = self._key_values[a]

        # Rule 2: tonic at the start of the first and the last bar, then hold/rest to the end (the first bar
        # starts after the primer: offset; while the primer plays, t < offset earns nothing here).
        f = length - 4
        if t == s.offset or t == f:
            v_tonic = np.where(a == self.tables.tonic, cfg.tonic_bonus, 0.0)
        elif t == f + 1:
            v_tonic = np.where(hold, cfg.tonic_bonus, 0.0)
        elif t > f + 1:
            v_tonic = np.where(hold | rest, cfg.tonic_bonus, 0.0)
        else:
            v_tonic = np.zeros(a.shape[0])

        # Rule 3: the backward scan of the spec, read off the run trackers (see RewardState).
        same = a == prev
        n = np.where(hold, s.tail_holds, np.where(rest, s.tail_rests, np.where(same, s.rep_count, 0)))
        gap = np.where(hold, s.tail_rests > 0, np.where(rest, s.tail_holds > 0, s.rep_gap))
        fire = np.where(gap, n > cfg.repeat_limit_with_gaps, n > cfg.repeat_limit)
        fire |= rest & (n > cfg.rest_repeat_limit)
        v_rep = np.where(fire, -cfg.repetition_penalty, 0.0)
        tail_any = (s.tail_holds + s.tail_rests) > 0
        s.rep_count = np.where(same, s.rep_count + 1, np.where(real, 1, s.rep_count))
        s.rep_gap = np.where(real, np.where(same, s.rep_gap, tail_any), True)
        s.tail_holds = np.where(real, 0, s.tail_holds + hold)
        s.tail_rests = np.where(real, 0, s.tail_rests + rest)
        s.prev_note = np.where(real, a, prev)

        # Rule 4: autocorrelation of c' (n = t + 1 classes), tested exactly in integers.
        n_len = t + 1
        s.sum_x += a
        s.sum_x2 += a * a
        penalty = np.zeros(a.shape[0])
        for k, lag in enumerate(cfg.autocorrelation_lags):
            if t < lag:
                continue  # n <= lag: rho = 0
            s.lag_products[:, k] += a * s.history[:, t - lag]
            head = _column_sum(s.history, 0, lag)
            tail = _column_sum(s.history, n_len - lag, n_len)
            num, den = autocorrelation_terms(n_len, s.sum_x, s.sum_x2, s.lag_products[:, k], head, tail, lag)
            over = self._thr_den * np.abs(num) > self._thr_num * den  # den == 0 (NaN rho) never passes
            rho = num / np.maximum(den, 1)
            penalty = penalty + np.where(over, cfg.autocorrelation_scale * np.abs(rho), 0.0)
        v_auto = 0.0 - penalty

        # Rules 5 and 6: motif in the last W classes; repeated if that window occurred before it started.
        w = cfg.motif_length
        code = ((s.window_codes[:, t - 1] << BITS_PER_CLASS) | a) & self._code_mask if t else a.copy()
        s.window_codes[:, t] = code
        if t >= w - 1:
            u = distinct_real_notes(s.history[:, t - w + 1 : t + 1])
            v_motif = self._motif_values[u]
            if t >= 2 * w - 1:
                earlier = s.window_codes[:, w - 1 : t - w + 1]  # windows ending at w-1 .. t-w
                found = _matches_a_column(earlier, code) & (u >= cfg.motif_min_notes)
                v_repeat = np.where(found, self._repeat_values[u], 0.0)
            else:
                v_repeat = np.zeros(a.shape[0])
        else:
            v_motif = np.zeros(a.shape[0])
            v_repeat = np.zeros(a.shape[0])

        # Rule 7: interval from the previous real note.
        v_int = self._interval_values[interval_class(prev, a, self.tables)]

        # Rule 8: leap resolution; the tracker is untouched at step 0 (empty composition).
        if t:
            outcome, s.direction, s.leapt_from, s.since = leap_transition(
                s.direction,
                s.leapt_from,
                s.since,
                prev,
                a,
                leap_size=cfg.leap_size,
                min_steps_between=cfg.leap_min_steps_between,
            )
            v_leap = self._leap_values[outcome + 1]
        else:
            v_leap = np.zeros(a.shape[0])

        # Rule 9: unique extremes of the whole melody, last step only.
        if t == length - 1:
            full = s.history
            top = full.max(axis=1)
            unique_top = (full == top[:, None]).sum(axis=1) == 1
            low = np.where(full >= FIRST_NOTE_CLASS, full, NUM_CLASSES).min(axis=1)
            unique_low = (full == low[:, None]).sum(axis=1) == 1  # no real note: low = 38 matches nothing
            v_ext = np.where(unique_top, cfg.extremes_bonus, 0.0) + np.where(
                unique_low, cfg.extremes_bonus, 0.0
            )
        else:
            v_ext = np.zeros(a.shape[0])

        values = [v_key, v_tonic, v_rep, v_auto, v_motif, v_repeat, v_int, v_leap, v_ext]
        for name, fn in self.custom_rules:
            out = np.asarray(fn(s.history[:, :t], a, t, length), dtype=np.float64)
            if out.shape != a.shape:
                raise ConfigError(f"rule {name!r} returned shape {out.shape}, expected {a.shape}")
            values.append(out)
        s.t = t + 1
        return [self._weighted(name, v) for name, v in zip(self.rule_names, values, strict=True)]

    def _weighted(self, name: str, value: FloatArray) -> FloatArray:
        weight = self.weights[name]
        if weight == 1.0:
            return value
        if weight == 0.0:
            return np.zeros(value.shape[0])
        return value * weight

    @staticmethod
    def _check_actions(s: RewardState, actions: np.ndarray) -> IntArray:
        a = np.asarray(actions)
        if a.shape != (s.batch_size,):
            raise InvalidMelodyError(
                f"expected {s.batch_size} actions (shape ({s.batch_size},)), got {a.shape}"
            )
        if a.dtype != np.int64:
            a = validate_classes(a)
        if s.t >= s.length:
            raise InvalidMelodyError(f"the melodies already have all {s.length} steps; call reset() first")
        lo, hi = a.min(), a.max()
        if lo < 0 or hi >= NUM_CLASSES:
            raise InvalidMelodyError(f"actions must be classes 0..{NUM_CLASSES - 1}, got values {lo}..{hi}")
        return a

    # -------------------------------------------------------------------------------------- whole melodies
    def score(
        self, melodies: object, *, by_rule: bool = False, primers: object = None
    ) -> FloatArray | dict[str, FloatArray]:
        """Per-step rewards of whole (or partial: T < L) melodies, by running :meth:`step` over the steps.

        Args:
            melodies: (N, T) classes, T <= ``config.length``; a 1-D melody gives 1-D output.
            by_rule: return a dict rule name -> (N, T) weighted values (summing to the total) instead.
            primers: (N,) or (N, P) classes fed before each melody, as :meth:`reset` takes them (judged only
                with ``hear_primer``; a 1-D melody takes a scalar or (P,)).

        Returns:
            float64 (N, T) r_MT per step (or the dict).

        Raises:
            InvalidMelodyError: invalid classes, ragged or empty input, or T > L.
        """
        arr = validate_classes(melodies)
        single = arr.ndim == 1
        if single:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise InvalidMelodyError(f"melodies must be a 2-D array (N, T), got shape {arr.shape}")
        n, steps = arr.shape
        if primers is not None:
            primers = np.asarray(primers)
            primers = primers.reshape(1, -1) if single else primers
        if steps > self.config.length:
            raise InvalidMelodyError(
                f"melodies have {steps} steps, longer than the melody length L = {self.config.length}"
            )
        # (T, N) while filling: each step writes one contiguous row (the caller gets the (N, T) transpose);
        # the rules one by one only when asked for (writing nine (N, T) arrays was a third of the time)
        per_rule = {name: np.zeros((steps, n)) for name in self.rule_names} if by_rule else {}
        total = np.zeros((steps, n))
        for lo in range(0, n, _CHUNK_ROWS):
            block = np.ascontiguousarray(
                arr[lo : lo + _CHUNK_ROWS].T
            )  # (T, rows): one contiguous row per step
            state = self.reset(block.shape[1], None if primers is None else primers[lo : lo + _CHUNK_ROWS])
            for t in range(steps):
                values = self._advance(state, block[t])
                acc = values[0]
                if by_rule:
                    for name, v in zip(self.rule_names, values, strict=True):
                        per_rule[name][t, lo : lo + len(v)] = v
                for v in values[1:]:
                    acc = acc + v
                total[t, lo : lo + len(acc)] = acc
        if by_rule:
            return {k: v[:, 0] if single else np.ascontiguousarray(v.T) for k, v in per_rule.items()}
        return total[:, 0] if single else np.ascontiguousarray(total.T)


def _column_sum(block: IntArray, lo: int, hi: int) -> IntArray:
    """``block[:, lo:hi].sum(axis=1)`` (integers: exact in any order), as ``hi - lo`` column additions: a
    reduction over a few columns of a C-order block walks it row by row, ~6x slower at 4,096 rows."""
    out = block[:, lo].copy()
    for j in range(lo + 1, hi):
        out += block[:, j]
    return out


def _matches_a_column(block: IntArray, values: IntArray) -> BoolArray:
    """``(block == values[:, None]).any(axis=1)`` column by column (~2x faster on a few columns)."""
    found = np.zeros(block.shape[0], dtype=bool)
    for j in range(block.shape[1]):
        found |= block[:, j] == values
    return found


def sum_in_order(values: list[float]) -> float:
    """``values[0] + values[1] + ...`` left to right (the order the batched path adds the rules in)."""
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total


def music_theory_rewards(
    melodies: object,
    *,
    length: int | None = None,
    by_rule: bool = False,
    key: str | None = None,
    mode: str | None = None,
    weights: Mapping[str, float] | None = None,
    config: RewardConfig | None = None,
) -> FloatArray | dict[str, FloatArray]:
    """r_MT of every step of N melodies (unscaled: not divided by the tuner's ``c``).

    Args:
        melodies: (N, T) int classes 0..37 (a list of lists is accepted; a 1-D melody gives 1-D output).
        length: the melody length L of the tonic and extremes rules (default T); T <= L.
        by_rule: return a dict keyed by rule name (``RULE_NAMES``, then registered rules) of (N, T) arrays
            that sum to the total, instead of the total.
        key: tonic of the key (note name); None: ``config.key`` (default ``"C"``).
        mode: ``"major"`` or ``"minor"``; None: ``config.mode`` (default ``"major"``).
        weights: rule name -> multiplier (0 switches a rule off).
        config: all other constants (default: the paper's).

    Returns:
        float64 (N, T) rewards, or the dict.

    Raises:
        InvalidMelodyError (a ValueError): classes outside 0..37, ragged or empty input, T > length.
        ConfigError: unknown key, mode or rule name.
    """
    arr = validate_classes(melodies)
    steps = arr.shape[-1]
    if length is not None and length < steps:
        raise InvalidMelodyError(f"melodies have {steps} steps, longer than length = {length}")
    cfg = config if config is not None else RewardConfig()
    changes: dict[str, object] = {"length": steps if length is None else int(length)}
    if key is not None:
        changes["key"] = key
    if mode is not None:
        changes["mode"] = mode
    cfg = dataclasses.replace(cfg, **changes)  # type: ignore[arg-type]
    return MusicTheoryReward(cfg, weights=weights).score(arr, by_rule=by_rule)
