"""Time limits (Config.time_limit): what a step at the limit means to the critics, the time left in the critic's
state, the per-family defaults, and runs recorded before the field existed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perla_jax import Config, make_env, make_trainer
from perla_jax.envs.base import TIME_LIMITS
from perla_jax.outputs import checkpoints
from perla_jax.rollout import rollout

MPE_HORIZON = 26  # transitions of a jaxmarl MPE episode: it tests step >= max_steps (25) before counting the step
TINY = dict(env="mpe", num_envs=2, num_steps=2 * MPE_HORIZON + 5, num_minibatches=2, update_epochs=1, k=2,
            actor_hidden=(8,), critic_hidden=(8, 8), total_timesteps=2 * (2 * MPE_HORIZON + 5))


def run_episode(env, steps: int):
    """(per step: the critic state acted in, the transition) for ``steps`` random steps from a reset."""
    _, state = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    critic_state = jax.jit(env.critic_state)
    obs, _ = env.reset(jax.random.PRNGKey(0))
    out = []
    for t in range(steps):
        now = critic_state(state.inner, obs)
        state, tr = step(jax.random.PRNGKey(t + 1), state, env.random_actions(jax.random.PRNGKey(100 + t)))
        out.append((now, tr))
        obs = tr.obs
    return out


@pytest.mark.parametrize("time_limit", TIME_LIMITS)
def test_mpe_time_limit_flags_and_time_left(time_limit):
    env = make_env("mpe", time_limit=time_limit)
    observe = time_limit == "observe"
    assert env.state_dim == env.num_agents * env.obs_dim + observe
    steps = run_episode(env, MPE_HORIZON + 3)
    for t, (now, tr) in enumerate(steps):
        at_limit = t == MPE_HORIZON - 1
        # bootstrap: the limit is a truncation; terminal and observe: the episode's terminal step
        assert (bool(tr.terminated), bool(tr.truncated)) == (
            (False, at_limit) if time_limit == "bootstrap" else (at_limit, False)), t
        assert now.shape == tr.final_state.shape == (env.state_dim,)
        if observe:  # 1 - t/26 in the state acted in, 1 - (t+1)/26 in the state reached
            elapsed = t % MPE_HORIZON
            np.testing.assert_allclose(float(now[-1]), 1.0 - elapsed / MPE_HORIZON, atol=1e-6)
            np.testing.assert_allclose(float(tr.final_state[-1]), 1.0 - (elapsed + 1) / MPE_HORIZON, atol=1e-6)
            np.testing.assert_array_equal(tr.final_state[:-1], tr.final_obs.reshape(-1))
        else:
            np.testing.assert_array_equal(tr.final_state, tr.final_obs.reshape(-1))


def test_smax_time_left_reaches_zero_at_its_limit():
    max_steps = 4  # jaxmarl SMAX: a timed-out episode has max_steps + 1 transitions (see envs/smax.py)
    env = make_env("smax", {"max_steps": max_steps}, "3m", time_limit="observe")
    assert env.state_dim == env.world_state_dim + 1
    steps = run_episode(env, max_steps + 1)
    lefts = [float(tr.final_state[-1]) for _, tr in steps]
    np.testing.assert_allclose(lefts, [1 - (t + 1) / (max_steps + 1) for t in range(max_steps + 1)], atol=1e-6)
    assert bool(steps[-1][1].terminated) and not bool(steps[-1][1].truncated)


@pytest.mark.parametrize("time_limit", ["bootstrap", "terminal"])
def test_targets_bootstrap_past_the_limit_only_when_asked(time_limit):
    """The critic's regression target at the limit's step: r + gamma V(final state) with bootstrap, r alone
    with terminal (what JaxMARL's GAE does)."""
    cfg = Config.applicable_of(dict(TINY, algo="mappo", time_limit=time_limit, gae_lambda=0.0))
    trainer = make_trainer(cfg)
    state = trainer.init(jax.random.PRNGKey(0))
    _, _, traj, *_ = rollout(trainer.env, trainer.agents, state.actor.params, state.env_state, state.obs,
                             jax.random.PRNGKey(1), cfg.num_steps)
    est = trainer.critic.estimate(state.actor.params, state.critic.params, traj, jax.random.PRNGKey(2))
    limit = np.asarray(traj.episode_length) == MPE_HORIZON  # [T, E] the limit's steps
    assert limit.sum() == 2 * cfg.num_envs
    reward, targets = np.asarray(traj.reward)[limit], np.asarray(est.targets)[limit]  # [2E, N]
    params = state.critic.params
    final_values = np.asarray(trainer.critic.network.apply(params, trainer.critic.inputs.features(
        traj.final_obs, traj.final_state)))[limit]
    want = reward if time_limit == "terminal" else reward + cfg.gamma * final_values
    assert np.abs(final_values).max() > 1e-3  # the two cases differ
    np.testing.assert_allclose(targets, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("algo", ["ippo", "perla_mappo"])
def test_observe_feeds_the_time_left_to_every_critic_and_trains(algo):
    cfg = Config.applicable_of(dict(TINY, algo=algo, time_limit="observe"))
    trainer = make_trainer(cfg)
    inputs = trainer.critic.inputs
    obs = jnp.ones((3, trainer.env.num_agents, trainer.env.obs_dim))
    state = jnp.concatenate([jnp.zeros((3, trainer.env.world_state_dim)), jnp.array([[0.2], [0.5], [0.9]])], -1)
    features = inputs.features(obs, state)
    # the MLP critics of centralised algorithms see the whole state (time left last); decentralised ones, and every
    # agent's own part in the factored critic, their observation then the time left (then the agent id)
    factored = cfg.critic_arch == "factored"
    column = trainer.env.state_dim - 1 if cfg.centralised_critic and not factored else trainer.env.obs_dim
    np.testing.assert_allclose(features[:, :, column], jnp.broadcast_to(state[:, -1:], (3, trainer.env.num_agents)))
    _, metrics = jax.jit(lambda s: trainer.run_updates(s, 2))(trainer.init(jax.random.PRNGKey(0)))
    for name in ("return", "critic_loss", "pg_var"):
        assert np.isfinite(np.asarray(metrics[name])).all(), name


def test_default_time_limit_per_family_and_bad_values():
    # MPE: chosen by the timelimit-mpe study (BENCHMARKS.md); elsewhere unmeasured, so bootstrap as before
    assert Config(env="mpe").time_limit == "observe"
    assert Config(env="MPE_simple_speaker_listener_v4").time_limit == "observe"
    assert Config(env="smax", map_name="3m").time_limit == "bootstrap"
    assert Config(env="credit").time_limit == "bootstrap"
    assert Config(env="mpe", time_limit="observe").time_limit == "observe"
    with pytest.raises(ValueError, match="time_limit='never' is invalid: allowed are bootstrap, terminal, observe"):
        Config(time_limit="never")
    with pytest.raises(ValueError, match="time_limit='never' is invalid"):
        make_env("mpe", time_limit="never")


def test_runs_recorded_before_the_field_read_back_as_bootstrap():
    stored = Config(env="mpe", time_limit="bootstrap").to_dict()
    del stored["time_limit"]
    assert Config.from_dict(stored).time_limit == "bootstrap"
    # an old checkpoint's meta lacks the field: the config.json it belongs to still matches
    checkpoints.check_meta_config({"config": stored}, Config.from_dict(stored).to_dict(), 1)
    with pytest.raises(ValueError, match="time_limit"):
        checkpoints.check_meta_config({"config": stored}, Config(env="mpe", time_limit="terminal").to_dict(), 1)


def test_mabrax_time_left_counts_brax_steps():
    pytest.importorskip("brax")
    env = make_env("ant_4x2", {"episode_length": 3}, time_limit="observe")
    _, state = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    lefts = []
    for t in range(3):
        state, tr = step(jax.random.PRNGKey(t), state, jnp.zeros((env.num_agents, env.action_dim)))
        lefts.append(float(tr.final_state[-1]))
    np.testing.assert_allclose(lefts, [2 / 3, 1 / 3, 0.0], atol=1e-6)
    assert bool(tr.terminated) and not bool(tr.truncated)  # the limit's step, terminal under "observe"
