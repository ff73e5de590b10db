"""The credit-assignment game (``--env credit``) against its closed-form rewards and returns."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perla_jax import Config, make_env, make_trainer

N, A = 5, 4


@pytest.fixture(scope="module")
def env():
    return make_env("credit", {"num_agents": N, "num_contexts": A, "num_actions": A})


def test_reward_is_the_share_of_agents_that_chose_their_contexts_best_action(env):
    obs, state = env.reset(jax.random.PRNGKey(0))
    context = np.asarray(state.inner.context)
    np.testing.assert_array_equal(obs, np.eye(A)[context])  # each agent sees its own one-hot context
    for correct in range(N + 1):
        actions = jnp.asarray(np.where(np.arange(N) < correct, context % A, (context + 1) % A))
        _, tr = env.step(jax.random.PRNGKey(1), state, actions)
        np.testing.assert_allclose(tr.reward, correct / N)
        assert bool(tr.terminated) and not bool(tr.truncated)  # one step, a terminal state
        assert float(tr.episode_return) == pytest.approx(correct / N) and float(tr.episode_length) == 1.0
    assert env.state_dim == N * A


def test_random_team_scores_one_over_the_actions(env):
    keys = jax.random.split(jax.random.PRNGKey(2), 4000)

    def episode(key):
        k_reset, k_act, k_step = jax.random.split(key, 3)
        _, state = env.reset(k_reset)
        return env.step(k_step, state, env.random_actions(k_act))[1].reward[0]

    rewards = np.asarray(jax.jit(jax.vmap(episode))(keys))
    se = rewards.std() / np.sqrt(rewards.size)
    assert abs(rewards.mean() - 1 / A) < 4 * se


def test_reward_noise_has_the_requested_scale():
    noisy = make_env("credit", {"num_agents": 2, "reward_noise": 0.5})
    _, state = noisy.reset(jax.random.PRNGKey(0))
    actions = state.inner.context % noisy.num_actions  # every agent right: reward 1 + noise
    step = jax.jit(jax.vmap(lambda k: noisy.step(k, state, actions)[1].reward[0]))
    rewards = np.asarray(step(jax.random.split(jax.random.PRNGKey(1), 4000)))
    assert abs(rewards.mean() - 1.0) < 0.05 and abs(rewards.std() - 0.5) < 0.03


@pytest.mark.parametrize("kwargs, match", [
    ({"num_agents": 0}, "num_agents=0"), ({"num_actions": 1}, "num_actions=1"), ({"reward_noise": -1.0}, "reward_noise"),
    ({"agents": 3}, r"\['agents'\] are unknown.*num_agents"),
])
def test_bad_kwargs_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_env("credit", kwargs)


def test_ippo_learns_the_two_agent_game():
    """A solvable instance: from 1/4 (random) to near the known optimum 1.0."""
    cfg = Config(env="credit", env_kwargs={"num_agents": 2}, algo="ippo", num_envs=16, num_steps=4,
                 total_timesteps=64 * 60, num_minibatches=2, update_epochs=4, actor_lr=3e-2, critic_lr=3e-2,
                 anneal_lr=False, actor_hidden=(16,), critic_hidden=(16,), ent_coef=0.0)
    trainer = make_trainer(cfg)
    _, metrics = jax.jit(lambda k: trainer.run_updates(trainer.init(k), cfg.num_updates))(jax.random.PRNGKey(0))
    returns = np.asarray(metrics["return"])
    # Update 1 acts with the initial, near-uniform policy: 1/4 up to 3 standard errors over its 64 episodes.
    assert returns[0] < 0.4 and returns[-5:].mean() > 0.9, returns
