"""The divergence guard: after each compiled chunk, the seeds whose parameters or losses became non-finite.

A diverged seed is reported once, by seed, update and quantity (the first update of the chunk with a non-finite
watched metric, else the chunk's last). What happens next is the run's choice (``ON_DIVERGENCE``):

- ``stop`` the run: the chunk's rows are written (the diverged seed's marked, as below) but not its checkpoint,
  so the newest checkpoint holds finite parameters (a resume drops the rows after it and trains them again).
- ``freeze`` the diverged seeds while the others go on. States are known finite only at chunk boundaries, so a
  frozen seed goes back to its state at the start of the chunk it diverged in and stays there: the updates of that
  chunk before the divergence are discarded with the rest. Its metrics.csv rows from that chunk's first update on,
  to the end of the run, are therefore written with ``diverged`` = 1 and every metric NaN; only ``env_steps``
  goes on counting as if it trained, so every seed's rows share one x axis. Frozen seeds, ``{seed: update it
  diverged at}``, are carried in the checkpoints, so a resumed run neither reports them again nor keeps their
  updates (the compiled chunk still runs every seed; a frozen one's results are dropped each time).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import chex
import jax
import jax.numpy as jnp
import numpy as np

ON_DIVERGENCE = ("stop", "freeze")
EXIT_CODE = 3  # the process's exit status when a divergence stops a run
# Metrics finite in every healthy update; return, episode_length and win_rate are NaN whenever no episode
# ended, so they say nothing about divergence.
WATCHED_METRICS = ("actor_loss", "critic_loss", "entropy", "approx_kl", "clip_frac", "critic_sample_var")
PARAMETERS = ("actor_params", "critic_params")


@dataclasses.dataclass(frozen=True)
class Divergence:
    seed: int
    update: int  # the first update of the chunk with a non-finite watched metric, else the chunk's last update
    quantities: tuple[str, ...]  # the metrics non-finite at that update and the non-finite parameter sets

    def describe(self) -> str:
        return f"seed {self.seed} diverged at update {self.update}: non-finite {', '.join(self.quantities)}"


def finite_parameters(state: Any) -> dict[str, chex.Array]:
    """Per seed, whether every parameter is finite: ``{"actor_params": [S], "critic_params": [S]}`` for a
    vmapped RunnerState (every leaf ``[S, ...]``)."""

    def per_seed(tree: chex.ArrayTree) -> chex.Array:
        leaves = [jnp.isfinite(x).reshape(x.shape[0], -1).all(axis=1) for x in jax.tree.leaves(tree)]
        return jnp.stack(leaves).all(axis=0)

    return {"actor_params": per_seed(state.actor.params), "critic_params": per_seed(state.critic.params)}


def find_divergences(
    metrics: Mapping[str, np.ndarray],
    params_finite: Mapping[str, np.ndarray],
    first_update: int,
    ignore: frozenset[int] | set[int] = frozenset(),
) -> list[Divergence]:
    """The seeds (not in ``ignore``) that diverged in a chunk of metrics ``[S, n]`` numbered from
    ``first_update``, given ``params_finite`` (``[S]`` per parameter set, after the chunk)."""
    num_seeds, n = np.asarray(metrics[WATCHED_METRICS[0]]).shape
    found = []
    for seed in range(num_seeds):
        if seed in ignore:
            continue
        bad = {name: np.flatnonzero(~np.isfinite(np.asarray(metrics[name])[seed])) for name in WATCHED_METRICS}
        first_bad = min((int(idx[0]) for idx in bad.values() if idx.size), default=None)
        bad_params = tuple(name for name in PARAMETERS if not bool(np.asarray(params_finite[name])[seed]))
        if first_bad is None and not bad_params:
            continue
        at = first_bad if first_bad is not None else n - 1
        names = tuple(name for name, idx in bad.items() if idx.size and idx[0] == at)
        found.append(Divergence(seed, first_update + at, names + bad_params))
    return found


def frozen_meta(frozen: Mapping[int, int]) -> dict[str, dict[str, int]]:
    """The frozen seeds ``{seed: update}`` as checkpoint metadata (JSON keys are strings)."""
    return {"diverged_seeds": {str(seed): int(update) for seed, update in frozen.items()}}


def frozen_from_meta(meta: Mapping[str, Any]) -> dict[int, int]:
    """The inverse of ``frozen_meta``; a checkpoint without the entry has no frozen seeds."""
    return {int(seed): int(update) for seed, update in meta.get("diverged_seeds", {}).items()}


def diverged_mask(frozen: Mapping[int, int], num_seeds: int, first_update: int, n: int) -> np.ndarray:
    """``[S, n]`` bool: the rows of a chunk of ``n`` updates from ``first_update`` that a frozen seed
    (``{seed: update it diverged at}``) did not train. That is every row of every seed frozen by the chunk's end,
    those before its divergence included: ``freeze`` takes it back to its state at the chunk's start."""
    mask = np.zeros((num_seeds, n), bool)
    for seed, update in frozen.items():
        mask[seed] = update < first_update + n
    return mask


def freeze(state: Any, last_finite: Any, seeds: list[int]) -> Any:
    """``state`` with the given seeds' entries (leading axis of every leaf) taken from ``last_finite``, the state
    at the chunk's start."""
    if not seeds:
        return state
    num_seeds = jax.tree.leaves(state)[0].shape[0]
    keep_old = np.zeros(num_seeds, bool)
    keep_old[seeds] = True

    def pick(new: chex.Array, old: chex.Array) -> chex.Array:
        return jnp.where(keep_old.reshape((-1,) + (1,) * (new.ndim - 1)), old, new)

    return jax.tree.map(pick, state, last_finite)


def frozen_note(divergence: Divergence, first_update: int) -> str:
    """What ``freeze`` does to a seed that diverged in the chunk from ``first_update``, said once, beside its report."""
    return (f"seed {divergence.seed} frozen at its state after update {first_update - 1}; its metrics.csv rows "
            f"from update {first_update} on are marked diverged, with NaN metrics")


def mark_frozen(metrics: Mapping[str, np.ndarray], mask: np.ndarray, first_update: int, batch_size: int) -> dict:
    """A chunk's metrics ``[S, n]`` with the cells of ``mask`` (``diverged_mask``: frozen seeds, from the start
    of the chunk they diverged in) set to NaN, their ``env_steps`` counted as if training had gone on, and
    ``diverged`` = ``mask``."""
    out = {name: np.asarray(values) for name, values in metrics.items()}
    for name, values in out.items():
        if name == "env_steps":
            steps = (first_update + np.arange(values.shape[1])) * batch_size
            out[name] = np.where(mask, steps[None, :], values)
        elif np.issubdtype(values.dtype, np.floating):
            out[name] = np.where(mask, np.nan, values)
    out["diverged"] = mask
    return out
