"""Evaluating trained policies: whole episodes per seed, greedy or stochastic, summarised over seeds.

``team_return`` follows training's convention (``EnvState.episode_return``): per episode, the sum over
time of the mean reward over agents; ``win_rate`` (SMAX only) is the fraction of episodes won. Each episode starts from its own reset and runs until its first end;
seeds are the leading axis of the actor parameters, as in the vmapped training state.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from perla_jax.acting import act_step
from perla_jax.agents import Agents
from perla_jax.envs.base import MultiAgentEnv
from perla_jax.outputs.recording import mean_ci

EVAL_MODES = ("greedy", "stochastic")
EVAL_FILE = "eval.json"
PERIODIC_FILE = "eval.csv"  # periodic evaluation during training (Config.eval_every)
PERIODIC_COLUMNS = ("seed", "update", "env_steps", "team_return", "length", "win_rate")


@chex.dataclass(frozen=True)
class Episodes:
    """Outcome of evaluation episodes (any leading axes, e.g. ``[S, E]`` = seed, episode)."""

    team_return: chex.Array  # sum over time of the mean reward over agents
    length: chex.Array  # transitions in the episode
    ended: chex.Array  # the episode ended within the horizon (else the numbers above are incomplete)
    won: chex.Array | None = None  # the episode was won (None where the env has no wins, e.g. MPE)


def check_mode(mode: str) -> None:
    if mode not in EVAL_MODES:
        raise ValueError(f"mode={mode!r} is invalid: allowed are {', '.join(EVAL_MODES)}")


def play_episode(
    env: MultiAgentEnv,
    agents: Agents,
    actor_params: chex.ArrayTree,
    key: chex.PRNGKey,
    greedy: bool,
    horizon: int,
    record: bool = False,
) -> tuple[Episodes, Any, chex.Array]:
    """One episode from a reset with one seed's actor. Returns ``(episodes, states, live)``: the jaxmarl
    states acted in ``[horizon, ...]`` (None unless ``record``) and ``live [horizon]``, true for the steps
    that belong to the episode (after its end the auto-reset starts another, which is not counted)."""
    key_reset, key_run = jax.random.split(key)
    obs, state = env.reset(key_reset)

    def step(carry, step_key):
        state, obs, over, hidden = carry
        # After the episode's end, the auto-reset's episode is not counted, so no hidden reset is needed.
        mode = "greedy" if greedy else "sample"
        next_state, tr, acted = act_step(env, agents, actor_params, state, obs, hidden, jnp.array(False), step_key, mode)
        hidden = acted.hidden
        ended = tr.terminated | tr.truncated
        # The wrapper reports an episode's totals on its last step only.
        finishing = ended & ~over
        totals = (
            jnp.where(finishing, tr.episode_return, 0.0),
            jnp.where(finishing, tr.episode_length, 0.0),
            finishing & tr.won,
        )
        return (next_state, tr.obs, over | ended, hidden), (totals, ~over, state.inner if record else None)

    carry = (state, obs, jnp.array(False), agents.initial_actor_carry(()))
    (_, _, over, _), ((returns, lengths, wins), live, states) = jax.lax.scan(
        step, carry, jax.random.split(key_run, horizon)
    )
    won = wins.any() if env.reports_wins else None
    return Episodes(team_return=returns.sum(), length=lengths.sum(), ended=over, won=won), states, live


def make_evaluator(
    env: MultiAgentEnv, agents: Agents, num_episodes: int, mode: str
) -> Callable[[chex.ArrayTree, chex.PRNGKey], Episodes]:
    """``evaluate(actor_params [S, ...], key) -> Episodes [S, num_episodes]``, jitted, vmapped over seeds and
    episodes. Seed ``s`` uses ``split(key, S)[s]``, split again over its episodes."""
    check_mode(mode)
    if isinstance(num_episodes, bool) or not isinstance(num_episodes, int) or num_episodes < 1:
        raise ValueError(f"episodes={num_episodes!r} is invalid: allowed is an integer >= 1")
    horizon, greedy = env.horizon, mode == "greedy"

    def one_seed(params, key):
        keys = jax.random.split(key, num_episodes)
        return jax.vmap(lambda k: play_episode(env, agents, params, k, greedy, horizon)[0])(keys)

    @jax.jit
    def evaluate(actor_params: chex.ArrayTree, key: chex.PRNGKey) -> Episodes:
        num_seeds = jax.tree.leaves(actor_params)[0].shape[0]
        return jax.vmap(one_seed)(actor_params, jax.random.split(key, num_seeds))

    return evaluate


def summarise(episodes: Episodes, mode: str, checkpoint: int, eval_seed: int) -> dict[str, Any]:
    """The JSON-ready result of ``Episodes [S, E]``. Metrics live under ``metrics`` by name, each with
    per-seed means, their mean and the 95% half-width over seeds (normal approximation,
    ``recording.mean_ci``, as in the learning curve; None for one seed), so that another metric (e.g. a
    SMAX win rate) can be added beside ``team_return`` without changing the layout."""
    ended = np.asarray(episodes.ended)
    if not ended.all():
        raise RuntimeError(f"{int((~ended).sum())} of {ended.size} evaluation episodes did not end within the horizon")
    names = ("team_return", "length") + (("win_rate",) if episodes.won is not None else ())
    values = {"team_return": episodes.team_return, "length": episodes.length, "win_rate": episodes.won}
    per_seed = {name: np.asarray(values[name], np.float64).mean(axis=1) for name in names}
    num_seeds, num_episodes = ended.shape
    return {
        "checkpoint": int(checkpoint),
        "mode": mode,
        "episodes_per_seed": int(num_episodes),
        "num_seeds": int(num_seeds),
        "eval_seed": int(eval_seed),
        "metrics": {name: _over_seeds(values) for name, values in per_seed.items()},
    }


def _over_seeds(per_seed: np.ndarray) -> dict[str, Any]:
    mean, half, _ = mean_ci(per_seed)
    return {
        "per_seed": [float(v) for v in per_seed],
        "mean": float(mean),
        "ci95": float(half) if np.isfinite(half) else None,
    }


def append_periodic(path: str | Path, episodes: Episodes, update: int, env_steps: int) -> None:
    """Appends one row per seed (means over the episodes of ``Episodes [S, E]``) to the periodic evaluation
    CSV at ``path``, writing the header if the file is new; flushed and synced like ``metrics.csv``.
    ``win_rate`` is NaN where the env has no wins (MPE)."""
    ended = np.asarray(episodes.ended)
    if not ended.all():
        raise RuntimeError(f"{int((~ended).sum())} of {ended.size} evaluation episodes did not end within the horizon")
    returns = np.asarray(episodes.team_return, np.float64).mean(axis=1)
    lengths = np.asarray(episodes.length, np.float64).mean(axis=1)
    wins = np.full_like(returns, np.nan) if episodes.won is None else np.asarray(episodes.won, np.float64).mean(axis=1)
    path = Path(path)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(PERIODIC_COLUMNS)
        for seed, row in enumerate(zip(returns, lengths, wins)):
            writer.writerow([seed, update, env_steps, *(repr(float(v)) for v in row)])
        f.flush()
        os.fsync(f.fileno())
