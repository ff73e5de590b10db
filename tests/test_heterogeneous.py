"""Heterogeneous discrete agents (MPE speaker_listener): padded observations, per-agent action masks, masked
rollouts and K joint samples, training end to end.

speaker_0 sees 3 numbers and has 3 actions; listener_0 sees 11 and has 5. The speaker's observation is padded
with zeros to 11 and its actions 3 and 4 are unavailable. One compiled program per algorithm (module fixtures).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from programs import rollout_estimate_train

from perla_jax import Config, make_env, make_trainer
from perla_jax.envs.base import MultiAgentEnv, check_spaces

ENV = "MPE_simple_speaker_listener_v4"
TINY = dict(env=ENV, num_envs=2, num_steps=16, total_timesteps=64, num_minibatches=2, update_epochs=1, k=2,
            actor_hidden=(8, 8), critic_hidden=(8, 8))
UPDATES = 2
AVAIL = np.array([[True, True, True, False, False], [True, True, True, True, True]])


@pytest.fixture(scope="module")
def env():
    return make_env(ENV)


@pytest.fixture(scope="module")
def perla_run():
    """One program: a rollout of a fresh policy, PERLA's critic estimate on it, and two training updates."""
    # The marginal target stores the K joint samples in the estimates, which the mask checks read.
    trainer = make_trainer(Config(**TINY, algo="perla_mappo", critic_target="marginal"))
    probs = lambda state, traj: trainer.agents.policy(state.actor.params, traj.obs, traj.avail).probs  # [T, E, N, A]
    return trainer, *rollout_estimate_train(trainer, UPDATES, probs)(jax.random.PRNGKey(0))


# ---- spaces ------------------------------------------------------------------------------------------
def test_sizes_are_the_largest_agent(env):
    assert env.agents == ["speaker_0", "listener_0"]
    assert env.obs_dims == (3, 11) and env.obs_dim == 11
    assert env.action_counts == (3, 5) and env.num_actions == 5
    assert env.state_dim == 2 * 11
    # Homogeneous MPE is unchanged: every action available.
    spread = make_env("mpe")
    assert spread.action_mask.shape == (3, 5) and spread.action_mask.all()


def test_check_spaces_still_refuses_non_discrete_actions():
    from jaxmarl.environments import spaces

    class BoxActions:
        agents = ["a", "b"]

        def action_space(self, agent):
            return spaces.Discrete(3) if agent == "a" else spaces.Box(-1.0, 1.0, (2,))

        def observation_space(self, agent):
            return spaces.Box(-1.0, 1.0, (4,))

    with pytest.raises(ValueError, match="agent b has a non-discrete action space; allowed are Discrete"):
        check_spaces("box", MultiAgentEnv(name="box", env=BoxActions()))


# ---- (a) observations --------------------------------------------------------------------------------
def test_padded_observations_equal_jaxmarl_in_their_slots_and_zero_elsewhere(env):
    obs, state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    ref_reset, _ = jax.jit(env.env.reset)(jax.random.PRNGKey(0))
    step, ref_step = jax.jit(env.step), jax.jit(env.env.step_env)
    key = jax.random.PRNGKey(1)
    pairs = [(obs, ref_reset)]
    for _ in range(30):  # across an episode end (26 transitions)
        key, k_act, k_step = jax.random.split(key, 3)
        act = env.random_actions(k_act)
        k_env, _ = jax.random.split(k_step)
        ref_obs, _, ref_rew, _, _ = ref_step(k_env, state.inner, env.agent_actions(act))
        state, tr = step(k_step, state, act)
        pairs.append((tr.final_obs, ref_obs))
        np.testing.assert_array_equal(tr.reward, np.stack([ref_rew[a] for a in env.agents]))
        np.testing.assert_array_equal(tr.final_state, np.asarray(tr.final_obs).reshape(-1))
        np.testing.assert_array_equal(tr.final_avail, AVAIL)
    for padded, ref in pairs:
        padded = np.asarray(padded)
        assert padded.shape == (2, 11)
        for i, (agent, dim) in enumerate(zip(env.agents, env.obs_dims)):
            np.testing.assert_array_equal(padded[i, :dim], np.asarray(ref[agent]))
            np.testing.assert_array_equal(padded[i, dim:], 0.0)
    # The speaker's observation (the goal colour) is not all zeros, so the comparison means something.
    assert np.abs(np.asarray(pairs[0][0])[0, :3]).sum() > 0


# ---- (b) available actions ---------------------------------------------------------------------------
def test_avail_actions_mask_each_agent_beyond_its_count(env):
    _, state = env.reset(jax.random.PRNGKey(0))
    avail = np.asarray(env.avail_actions(state.inner))
    assert avail.dtype == bool
    np.testing.assert_array_equal(avail, AVAIL)


def test_subclass_masks_are_anded_with_the_agents_own_actions(env):
    """A subclass that masks actions itself (as SMAX does with its unit masks) passes its mask through
    ``only_real_actions``, which keeps a speaker's padded actions unavailable."""

    class Masked(MultiAgentEnv):
        def avail_actions(self, inner):
            return self.only_real_actions(jnp.array([[True, False, True, True, True], [False, True, True, True, True]]))

    got = np.asarray(Masked(name=ENV, env=env.env).avail_actions(None))
    np.testing.assert_array_equal(got, [[True, False, True, False, False], [False, True, True, True, True]])


def test_random_actions_draw_only_real_actions(env):
    acts = np.asarray(jax.vmap(env.random_actions)(jax.random.split(jax.random.PRNGKey(0), 500)))  # [500, N]
    assert set(acts[:, 0]) == {0, 1, 2} and set(acts[:, 1]) == {0, 1, 2, 3, 4}


# ---- (c) masked rollout and K joint samples ----------------------------------------------------------
def test_rollout_and_k_samples_never_take_unavailable_actions(perla_run):
    trainer, traj, est, probs, _ = perla_run
    T, E, N, A = TINY["num_steps"], TINY["num_envs"], 2, 5
    avail = np.asarray(traj.avail)
    assert avail.shape == np.asarray(traj.final_avail).shape == (T, E, N, A)
    np.testing.assert_array_equal(avail, np.broadcast_to(AVAIL, avail.shape))
    np.testing.assert_array_equal(np.asarray(traj.final_avail), avail)
    taken = np.take_along_axis(avail, np.asarray(traj.action)[..., None], axis=-1)[..., 0]
    assert taken.all()
    samples = np.asarray(est.joint_samples)  # [T, E, K, N]
    assert samples.shape == (T, E, TINY["k"], N)
    sampled = np.take_along_axis(avail[:, :, None], samples[..., None], axis=-1)[..., 0]
    assert sampled.all()
    # Masked probabilities are exactly 0, the others sum to 1; a fresh policy is near uniform, so an unmasked
    # speaker would have chosen action 3 or 4 in about 2/5 of the 32 steps.
    probs = np.asarray(probs)
    assert np.all(probs[..., 0, 3:] == 0.0) and np.all(probs[..., 0, :3] > 0.2)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    assert np.isfinite(np.asarray(traj.log_prob)).all()
    # The speaker's padded observation slots reach the actor as zeros.
    np.testing.assert_array_equal(np.asarray(traj.obs)[:, :, 0, 3:], 0.0)


# ---- (d) training ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mappo_metrics():
    trainer = make_trainer(Config.applicable_of(dict(TINY, algo="mappo")))
    _, metrics = jax.jit(lambda k: trainer.run_updates(trainer.init(k), UPDATES))(jax.random.PRNGKey(1))
    return metrics


@pytest.mark.parametrize("algo", ["perla_mappo", "mappo"])
def test_two_updates_give_finite_losses(algo, perla_run, mappo_metrics):
    metrics = perla_run[-1] if algo == "perla_mappo" else mappo_metrics
    for name in ("actor_loss", "critic_loss", "entropy", "approx_kl"):
        values = np.asarray(metrics[name])
        assert values.shape == (UPDATES,) and np.isfinite(values).all(), name
