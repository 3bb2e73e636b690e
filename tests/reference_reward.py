"""A deliberately plain oracle of the music-theory reward (``shared/spec/music-theory-reward.md``).

One melody at a time, one loop per step, the leap tracker as local variables, C major, default constants.
It follows the spec text literally and is slow on purpose: it exists so that the fast vectorised code in
``rltuner.rewards`` can be checked against it. The autocorrelation coefficient is computed with exact
fractions so that ties ``|rho| == 3/20`` are decided exactly (the spec allows either outcome at a tie; the
fast code decides them exactly too), and its value is the correctly rounded float of the exact fraction.
"""

from __future__ import annotations

from fractions import Fraction

REST = 0
HOLD = 1
KEY_SET = {0, 1, 2, 4, 6, 7, 9, 11, 13, 14, 16, 18, 19, 21, 23, 25, 26, 28, 30, 31, 33, 35, 37}
TONIC = 14
TONIC_OR_FIFTH = {2, 14, 26, 9, 21, 33}
TONIC_OR_THIRD = {2, 14, 26, 6, 18, 30}
RULES = (
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
PLAIN_INTERVAL_REWARD = {2: 0.08, 4: 0.09, 5: 0.07, 7: 0.02, 9: 0.05, 11: -0.3}


def rule_key(a: int) -> float:
    return -1.0 if a not in KEY_SET else 0.0


def rule_tonic(a: int, t: int, length: int) -> float:
    f = length - 4
    if t == 0 or t == f:
        return 3.0 if a == TONIC else 0.0
    elif t == f + 1:
        return 3.0 if a == HOLD else 0.0
    elif t > f + 1:
        return 3.0 if a in (HOLD, REST) else 0.0
    return 0.0


def excessively_repeated(c: list[int], a: int) -> bool:
    n = 0
    held = False
    rested = False
    for i in range(len(c) - 1, -1, -1):
        if c[i] == a:
            n += 1
        elif c[i] == REST:
            rested = True
        elif c[i] == HOLD:
            held = True
        else:
            break
    if a == REST and n > 1:
        return True
    elif not held and not rested:
        return n > 4
    else:
        return n > 6


def rule_repetition(c: list[int], a: int) -> float:
    return -100.0 if excessively_repeated(c, a) else 0.0


def autocorrelation(seq: list[int], lag: int) -> Fraction | None:
    """Exact rho of ``seq`` at ``lag``; None where the spec's float computation gives NaN (constant seq)."""
    n = len(seq)
    if n <= lag:
        return Fraction(0)
    mean = Fraction(sum(seq), n)
    x = [v - mean for v in seq]
    var = sum(v * v for v in x) / n
    if var == 0:
        return None
    num = sum(x[i] * x[i - lag] for i in range(lag, n))
    return num / n / var


def rule_autocorrelation(c_prime: list[int]) -> float:
    penalty = 0.0
    for lag in (1, 2, 3):
        rho = autocorrelation(c_prime, lag)
        if rho is None:
            continue
        if abs(rho) > Fraction(3, 20):
            penalty += 3 * abs(float(rho))
    return 0.0 - penalty


def distinct_real_notes(window: list[int]) -> int:
    return len({v for v in window if v >= 2})


def rule_motif(c_prime: list[int]) -> float:
    if len(c_prime) < 8:
        return 0.0
    u = distinct_real_notes(c_prime[-8:])
    if u >= 3:
        return 3 + max(0.3 * (u - 3), 0)
    return 0.0


def is_repeated_motif(c: list[int], c_prime: list[int]) -> bool:
    if len(c_prime) < 8:
        return False
    w = c_prime[-8:]
    if distinct_real_notes(w) < 3:
        return False
    before = c[: len(c) - 7]
    return any(before[s : s + 8] == w for s in range(len(before) - 8 + 1))


def rule_repeated_motif(c: list[int], c_prime: list[int]) -> float:
    if is_repeated_motif(c, c_prime):
        u = distinct_real_notes(c_prime[-8:])
        return 4 + max(u - 3, 0)
    return 0.0


def previous_real_note(c: list[int]) -> int | None:
    for v in reversed(c):
        if v >= 2:
            return v
    return None


def interval_class(c: list[int], a: int) -> str | int:
    """'none', 'hold', 'rest', 'hold_after', 'rest_after', 'fifth_in_key', 'third_in_key' or d."""
    p = previous_real_note(c)
    if p is None:
        return "none"
    if a == HOLD:
        return "hold_after" if p in TONIC_OR_FIFTH else "hold"
    if a == REST:
        return "rest_after" if p in TONIC_OR_FIFTH else "rest"
    d = abs(a - p)
    if d == 7 and p in TONIC_OR_FIFTH:
        return "fifth_in_key"
    if d == 4 and p in TONIC_OR_THIRD:
        return "third_in_key"
    return d


def rule_intervals(c: list[int], a: int) -> float:
    cls = interval_class(c, a)
    table: dict[str | int, float] = {
        "none": 0.0,
        "rest": 0.05,
        "hold": 0.075,
        "rest_after": 0.15,
        "hold_after": 0.3,
        "fifth_in_key": 0.1,
        "third_in_key": 0.15,
    }
    if cls in table:
        reward = table[cls]
    else:
        assert isinstance(cls, int)
        reward = -1.0 if cls > 12 else PLAIN_INTERVAL_REWARD.get(cls, 0.0)
    return reward * 5


def rule_extremes(c_prime: list[int], t: int, length: int) -> float:
    if t != length - 1:
        return 0.0
    reward = 0.0
    top = max(c_prime)
    if c_prime.count(top) == 1:
        reward += 3
    real = [v for v in c_prime if v >= 2]
    if real and c_prime.count(min(real)) == 1:
        reward += 3
    return reward


def reference_rewards(melody: list[int], length: int | None = None) -> list[dict[str, float]]:
    """Per-step rewards of one melody, one dict per step keyed by rule name (plus ``total``).

    Also returns, under ``leap_outcome`` (0 none, 1 resolved, -1 doubled), the leap detector's outcome.
    """
    length = len(melody) if length is None else length
    direction = 0
    leapt_from: int | None = None
    since = 0
    out = []
    for t, a in enumerate(melody):
        c = list(melody[:t])
        c_prime = [*c, a]
        # rule 8, the stateful one, advanced exactly once per step
        outcome = 0
        p = previous_real_note(c)
        if not c:
            pass
        elif a in (HOLD, REST) or p is None:
            since += 1
        elif abs(a - p) >= 7:
            dir_ = 1 if a > p else -1
            if direction != 0 and dir_ != direction:
                if since > 6:
                    outcome = 1
                direction = 0
                leapt_from = None
            elif direction != 0 and dir_ == direction:
                outcome = -1
            else:
                direction = dir_
                leapt_from = p
            since = 0
        else:
            since += 1
            if leapt_from is not None and (
                (direction == 1 and a <= leapt_from) or (direction == -1 and a >= leapt_from)
            ):
                outcome = 1
                direction = 0
                leapt_from = None
        step = {
            "key": rule_key(a),
            "tonic": rule_tonic(a, t, length),
            "repetition": rule_repetition(c, a),
            "autocorrelation": rule_autocorrelation(c_prime),
            "motif": rule_motif(c_prime),
            "repeated_motif": rule_repeated_motif(c, c_prime),
            "intervals": rule_intervals(c, a),
            "leaps": 5.0 if outcome == 1 else (-5.0 if outcome == -1 else 0.0),
            "extremes": rule_extremes(c_prime, t, length),
        }
        total = 0.0
        for name in RULES:
            total += step[name]
        step["total"] = total
        step["leap_outcome"] = float(outcome)
        out.append(step)
    return out
