"""Whole-episode replay memory.

The original RL Tuner stored each transition with the LSTM state it was taken in and trained one step from
that state, so stored states went stale as the network changed. Episodes are short (33 tokens with the
primer), so we store WHOLE episodes and recompute every network over the whole sequence when learning.
Episodes of a domain with an end token are stored padded to the longest length, with their mask.

With ``TuneConfig.stored_states`` the memory also keeps the acting network's recurrent state before every
token, as the original did, and the learner trains on single transitions from those states
(:meth:`EpisodeReplay.sample_transitions`): one network step per sample instead of a pass over the episode.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch


class EpisodeBatch(NamedTuple):
    """Complete episodes. ``tokens[:, 0]`` is the primer (an input, not an action); actions are ``tokens[:, 1:]``.

    Attributes:
        tokens: (B, L+1) int64; after an episode's end, the pad token.
        task_reward: (B, L) float32 task reward of each action (0 after the end).
        log_p: (B, L) float32 ``log p(a_t|s_t)`` of each action under the frozen prior (Reward RNN); 0 after
            the end.
        mask: (B, L) bool, true for the steps the episode played (its end token included).
        prior_logits: (B, L+1, V) float32, the frozen prior's logits at every state s_0 .. s_L (position t
            has read token t), as the environment computed them while playing; None when not recorded
            (only G-learning's target and ``offset_by_prior`` read them).
        states: (B, L+1, S) float32, the acting network's recurrent state before it read token t
            (``flatten_state`` rows; position 0 is the initial state), as it was while playing; None when not
            recorded (``TuneConfig.stored_states`` only).
    """

    tokens: torch.Tensor
    task_reward: torch.Tensor
    log_p: torch.Tensor
    mask: torch.Tensor
    prior_logits: torch.Tensor | None = None
    states: torch.Tensor | None = None

    @property
    def n_transitions(self) -> int:
        """Transitions actually played (masked steps excluded)."""
        return int(self.mask.sum())

    def not_done(self, terminal_last_step: bool = True, eos_token: int | None = None) -> torch.Tensor:
        """(B, L) float: 1 where the TD target bootstraps from the next state, 0 where the episode ended.

        Step t bootstraps when step t+1 was played; the last step bootstraps only when
        ``terminal_last_step`` is false (a fixed-length episode treated as continuing) and it did not play
        ``eos_token``. Call it on the episodes as stored (not :meth:`trimmed`: their last column is step L-1).
        """
        nd = torch.zeros(self.mask.shape, dtype=torch.float32)
        nd[:, :-1] = self.mask[:, 1:].float()
        nd[:, -1] = last_step_bootstraps(self.mask[:, -1], self.tokens[:, -1], terminal_last_step, eos_token)
        return nd

    def trimmed(self) -> EpisodeBatch:
        """The same episodes without the trailing steps that no episode played (saves work when learning)."""
        played = self.mask.any(dim=0).nonzero()
        n = int(played.max()) + 1 if played.numel() else 1
        if n == self.mask.shape[1]:
            return self
        logits = self.prior_logits[:, : n + 1] if self.prior_logits is not None else None
        states = self.states[:, : n + 1] if self.states is not None else None
        return EpisodeBatch(
            self.tokens[:, : n + 1], self.task_reward[:, :n], self.log_p[:, :n], self.mask[:, :n], logits,
            states,
        )  # fmt: skip

    def rows(self, index: torch.Tensor | slice) -> EpisodeBatch:
        """The episodes ``index`` selects (every field indexed along its first dimension)."""
        fields: list[Any] = [None if x is None else x[index] for x in self]
        return EpisodeBatch(*fields)

    def newest(self, n: int) -> EpisodeBatch:
        """The last ``n`` episodes."""
        return self.rows(slice(-n, None))


def last_step_bootstraps(
    played: torch.Tensor, action: torch.Tensor, terminal_last_step: bool, eos_token: int | None
) -> torch.Tensor:
    """Whether the TD target of an episode's last step (L-1) bootstraps, given whether it was ``played`` and
    its ``action``: only when that step is not terminal (``terminal_last_step`` false), was played, and did
    not play the end token."""
    if terminal_last_step:
        return torch.zeros_like(played)
    if eos_token is None:
        return played
    return played & (action != eos_token)


class Transitions(NamedTuple):
    """Single transitions ``(s_t, a_t, r_t, s_{t+1})`` with the acting network's stored states, n of them.

    Attributes:
        tokens: (n,) the token read at s_t (the primer or a_{t-1}); ``states`` (n, S) the state before it.
        next_tokens: (n,) a_t, read at s_{t+1}; ``next_states`` (n, S) the state before it (after ``tokens``).
        actions: (n,) a_t (the same as ``next_tokens``: the action is the next input).
        task_reward, log_p: (n,) float32 as in :class:`EpisodeBatch`.
        not_done: (n,) float32, 1 where the TD target bootstraps from s_{t+1}.
        prior_logits / next_prior_logits: (n, V) the frozen prior's logits at s_t and s_{t+1}, or None.
    """

    tokens: torch.Tensor
    states: torch.Tensor
    next_tokens: torch.Tensor
    next_states: torch.Tensor
    task_reward: torch.Tensor
    log_p: torch.Tensor
    not_done: torch.Tensor
    prior_logits: torch.Tensor | None = None
    next_prior_logits: torch.Tensor | None = None

    @property
    def actions(self) -> torch.Tensor:
        return self.next_tokens


def transitions_of(
    batch: EpisodeBatch,
    episode: torch.Tensor,
    step: torch.Tensor,
    terminal_last_step: bool = True,
    eos_token: int | None = None,
) -> Transitions:
    """The transitions ``(episode[i], step[i])`` of ``batch`` (as stored, not trimmed), which must carry
    ``states``; ``not_done`` as :meth:`EpisodeBatch.not_done` at those steps."""
    if batch.states is None:
        raise ValueError("these episodes carry no recurrent states (TuneConfig.stored_states)")
    nxt = step + 1
    length = batch.mask.shape[1]
    # EpisodeBatch.not_done at the drawn steps only (not over the whole memory)
    inside = nxt < length
    actions = batch.tokens[episode, nxt]
    not_done = batch.mask[episode, nxt.clamp(max=length - 1)] & inside
    not_done |= ~inside & last_step_bootstraps(
        batch.mask[episode, step], actions, terminal_last_step, eos_token
    )
    logits = batch.prior_logits
    return Transitions(
        batch.tokens[episode, step], batch.states[episode, step], actions,
        batch.states[episode, nxt], batch.task_reward[episode, step], batch.log_p[episode, step],
        not_done.float(),
        None if logits is None else logits[episode, step], None if logits is None else logits[episode, nxt],
    )  # fmt: skip


class EpisodeReplay:
    """A ring buffer of whole episodes with uniform sampling.

    Args:
        capacity_transitions: memory size in transitions; it keeps ``capacity // episode_length`` episodes.
        episode_length: L, the number of actions per episode.
        prior_vocab: V when the memory keeps each episode's ``prior_logits`` ((L+1) x V floats per episode:
            20 MB for the fast preset's 4,096 music episodes), None when it does not.
        state_size: S when the memory keeps each episode's recurrent ``states`` ((L+1) x S floats per
            episode: 80 MB for the paper preset's 3,125 music episodes with the Note RNN's S = 200), else None.
    """

    def __init__(
        self,
        capacity_transitions: int,
        episode_length: int,
        prior_vocab: int | None = None,
        state_size: int | None = None,
    ) -> None:
        self.episode_length = episode_length
        self.capacity = max(1, capacity_transitions // episode_length)
        self.tokens = torch.zeros(self.capacity, episode_length + 1, dtype=torch.int64)
        self.task_reward = torch.zeros(self.capacity, episode_length, dtype=torch.float32)
        self.log_p = torch.zeros(self.capacity, episode_length, dtype=torch.float32)
        self.mask = torch.zeros(self.capacity, episode_length, dtype=torch.bool)
        self.prior_logits: torch.Tensor | None = None
        if prior_vocab is not None:
            self.prior_logits = torch.zeros(
                self.capacity, episode_length + 1, prior_vocab, dtype=torch.float32
            )
        self.states: torch.Tensor | None = None
        if state_size is not None:
            self.states = torch.zeros(self.capacity, episode_length + 1, state_size, dtype=torch.float32)
        self.size = 0
        self.cursor = 0  # next slot to write

    def __len__(self) -> int:
        """Number of episodes held."""
        return self.size

    @property
    def n_transitions(self) -> int:
        """Transitions held (masked steps excluded)."""
        return int(self.mask[: self.size].sum())

    def add(self, batch: EpisodeBatch) -> None:
        """Store episodes, overwriting the oldest when full."""
        n = batch.tokens.shape[0]
        if n > self.capacity:  # only the newest fit
            batch = batch.newest(self.capacity)
            n = self.capacity
        slots = (self.cursor + torch.arange(n)) % self.capacity
        self.tokens[slots] = batch.tokens.cpu()
        self.task_reward[slots] = batch.task_reward.cpu().float()
        self.log_p[slots] = batch.log_p.cpu().float()
        self.mask[slots] = batch.mask.cpu()
        if self.prior_logits is not None:
            if batch.prior_logits is None:
                raise ValueError("this replay memory keeps the prior's logits, but the episodes carry none")
            self.prior_logits[slots] = batch.prior_logits.cpu().float()
        if self.states is not None:
            if batch.states is None:
                raise ValueError("this replay memory keeps recurrent states, but the episodes carry none")
            self.states[slots] = batch.states.cpu().float()
        self.cursor = int((self.cursor + n) % self.capacity)
        self.size = min(self.capacity, self.size + n)

    def sample(self, n_episodes: int, generator: torch.Generator) -> EpisodeBatch:
        """``n_episodes`` episodes drawn uniformly with replacement."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay memory")
        return self._buffers().rows(torch.randint(self.size, (n_episodes,), generator=generator))

    def _buffers(self) -> EpisodeBatch:
        """The whole memory (every slot, filled or not) as one batch of views."""
        return EpisodeBatch(
            self.tokens, self.task_reward, self.log_p, self.mask, self.prior_logits, self.states
        )

    def sample_transitions(
        self,
        n: int,
        generator: torch.Generator,
        terminal_last_step: bool = True,
        eos_token: int | None = None,
    ) -> Transitions:
        """``n`` played transitions drawn uniformly with replacement (the original's replay), with their
        stored states; a memory made with ``state_size``."""
        if self.size == 0 or not bool(self.mask[: self.size].any()):
            raise RuntimeError("cannot sample from a replay memory without played steps")
        flat = torch.randint(self.size * self.episode_length, (n,), generator=generator)
        played = self.mask.view(-1)[flat]
        while not bool(played.all()):  # steps after an episode's end: drawn again (uniform over played ones)
            redraw = (~played).nonzero().squeeze(1)
            flat[redraw] = torch.randint(
                self.size * self.episode_length, (redraw.numel(),), generator=generator
            )
            played = self.mask.view(-1)[flat]
        episode, step = flat // self.episode_length, flat % self.episode_length
        return transitions_of(self._buffers(), episode, step, terminal_last_step, eos_token)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only (safe to load with ``torch.load(weights_only=True)``)."""
        state = {
            "tokens": self.tokens[: self.size].clone(),
            "task_reward": self.task_reward[: self.size].clone(),
            "log_p": self.log_p[: self.size].clone(),
            "mask": self.mask[: self.size].clone(),
            "cursor": torch.tensor(self.cursor),
        }
        if self.prior_logits is not None:
            state["prior_logits"] = self.prior_logits[: self.size].clone()
        if self.states is not None:
            state["states"] = self.states[: self.size].clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict`. A memory that keeps the prior's logits needs them in ``state``
        (:meth:`missing_prior_logits` tells whether a saved state lacks them)."""
        size = int(state["tokens"].shape[0])
        if size > self.capacity or state["tokens"].shape[1] != self.episode_length + 1:
            raise ValueError("replay state does not fit this memory's capacity or episode length")
        self.tokens[:size] = state["tokens"]
        self.task_reward[:size] = state["task_reward"]
        self.log_p[:size] = state["log_p"]
        self.mask[:size] = state["mask"]
        if self.prior_logits is not None:
            if "prior_logits" not in state:
                raise ValueError("replay state holds no prior logits")
            self.prior_logits[:size] = state["prior_logits"]
        if self.states is not None:
            if "states" not in state:
                raise ValueError("replay state holds no recurrent states")
            self.states[:size] = state["states"]
        self.size = size
        self.cursor = int(state["cursor"])

    def missing_prior_logits(self, state: dict[str, torch.Tensor]) -> bool:
        """Whether ``state`` (a saved :meth:`state_dict`) lacks the logits this memory keeps: a run saved
        before they were recorded (2026-12-02)."""
        return self.prior_logits is not None and "prior_logits" not in state
