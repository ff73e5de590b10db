"""perla_jax.evaluation on a policy whose return is known in closed form, its determinism and its summary."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perla_jax import Config, make_trainer
from perla_jax.evaluation import Episodes, make_evaluator, summarise

SEEDS, EPISODES = 2, 3
# MPE_simple_v3: one agent, one landmark, no collisions, reward -|p_agent - p_landmark|^2 per step.
CFG = Config(env="MPE_simple_v3", algo="ippo", num_envs=2, num_steps=8, total_timesteps=16, num_minibatches=1,
             actor_hidden=(8,), critic_hidden=(8,))


def _stand_still_actor(agents, key):
    """Actor parameters whose logits are (1, 0, 0, 0, 0) for every observation: greedy picks action 0, which
    in jaxmarl's MPE applies no force, so an agent starting at rest never moves."""
    params = jax.tree.map(jnp.zeros_like, agents.init_actor(key))
    inner = params["params"]["MLP_0"]
    last = sorted(inner, key=lambda name: int(name.split("_")[-1]))[-1]
    inner[last]["bias"] = inner[last]["bias"].at[0].set(1.0)
    return params


@pytest.fixture(scope="module")
def setup():
    trainer = make_trainer(CFG)
    still = _stand_still_actor(trainer.agents, jax.random.PRNGKey(0))
    stacked = jax.tree.map(lambda x: jnp.stack([x] * SEEDS), still)
    evaluators = {mode: make_evaluator(trainer.env, trainer.agents, EPISODES, mode) for mode in ("greedy", "stochastic")}
    return trainer, stacked, evaluators


def test_greedy_stand_still_return_is_the_closed_form(setup):
    """Team return = -(episode length) * |p_agent - p_landmark|^2 at the reset, per (seed, episode), with the
    keys the evaluator documents: split(key, S)[s], then split(., E)[e], then split(.)[0] for the reset."""
    trainer, params, evaluators = setup
    key = jax.random.PRNGKey(7)
    out = evaluators["greedy"](params, key)
    assert out.team_return.shape == (SEEDS, EPISODES)
    length = trainer.env.horizon
    assert length == 26  # jaxmarl MPE: max_steps=25, ends after 26 transitions
    np.testing.assert_array_equal(out.length, length)
    assert bool(out.ended.all())
    reset = jax.jit(trainer.env.reset)
    for s, seed_key in enumerate(jax.random.split(key, SEEDS)):
        for e, episode_key in enumerate(jax.random.split(seed_key, EPISODES)):
            _, state = reset(jax.random.split(episode_key)[0])
            pos = np.asarray(state.inner.p_pos, np.float64)
            expected = -length * np.sum((pos[0] - pos[1]) ** 2)
            assert float(out.team_return[s, e]) == pytest.approx(expected, rel=1e-5), (s, e)
    # Episodes differ (different resets), so the check above is not one number repeated.
    assert len(np.unique(np.asarray(out.team_return))) == SEEDS * EPISODES


def test_same_key_same_numbers_and_modes_differ(setup):
    _, params, evaluators = setup
    key = jax.random.PRNGKey(3)
    greedy = evaluators["greedy"](params, key)
    np.testing.assert_array_equal(evaluators["greedy"](params, key).team_return, greedy.team_return)
    stochastic = evaluators["stochastic"](params, key)
    np.testing.assert_array_equal(evaluators["stochastic"](params, key).team_return, stochastic.team_return)
    # Sampling moves the agent (logits (1,0,0,0,0) pick action 0 only ~40% of the time).
    assert not np.allclose(stochastic.team_return, greedy.team_return)
    other = evaluators["stochastic"](params, jax.random.PRNGKey(4))
    assert not np.array_equal(other.team_return, stochastic.team_return)


def test_summary_mean_and_ci_over_seeds_by_hand():
    returns = np.array([[-10.0, -12.0, -14.0], [-20.0, -21.0, -25.0], [-5.0, -6.0, -7.0]])
    episodes = Episodes(team_return=returns, length=np.full(returns.shape, 26.0), ended=np.ones(returns.shape, bool))
    result = summarise(episodes, "greedy", checkpoint=12, eval_seed=5)
    per_seed = [-12.0, -22.0, -6.0]
    mean = sum(per_seed) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in per_seed) / 2)
    got = result["metrics"]["team_return"]
    assert got["per_seed"] == pytest.approx(per_seed)
    assert got["mean"] == pytest.approx(mean)
    assert got["ci95"] == pytest.approx(1.96 * std / math.sqrt(3))
    assert result["metrics"]["length"]["mean"] == 26.0
    assert {k: result[k] for k in ("checkpoint", "mode", "episodes_per_seed", "num_seeds", "eval_seed")} == {
        "checkpoint": 12, "mode": "greedy", "episodes_per_seed": 3, "num_seeds": 3, "eval_seed": 5,
    }
    one_seed = summarise(
        Episodes(team_return=returns[:1], length=np.ones((1, 3)), ended=np.ones((1, 3), bool)), "stochastic", 1, 0
    )
    assert one_seed["metrics"]["team_return"]["ci95"] is None  # undefined for one seed, not 0


def test_unfinished_episodes_and_bad_arguments_are_refused(setup):
    trainer, _, _ = setup
    ended = np.array([[True, False]])
    with pytest.raises(RuntimeError, match="1 of 2"):
        summarise(Episodes(team_return=np.zeros((1, 2)), length=np.zeros((1, 2)), ended=ended), "greedy", 1, 0)
    with pytest.raises(ValueError, match=r"mode='argmax'.*greedy, stochastic"):
        make_evaluator(trainer.env, trainer.agents, 2, "argmax")
    with pytest.raises(ValueError, match=r"episodes=0"):
        make_evaluator(trainer.env, trainer.agents, 0, "greedy")
