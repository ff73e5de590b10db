"""The truncation-aware environment step: final observations kept, episode statistics exact."""

import jax
import jax.numpy as jnp
import numpy as np

from perla_jax import make_env
from perla_jax.envs.base import concatenated_observations


def test_truncation_keeps_final_obs_and_resets():
    env = make_env("mpe")
    obs, state = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    key = jax.random.PRNGKey(1)
    total, ends = 0.0, []
    for t in range(60):
        key, k_act, k_step = jax.random.split(key, 3)
        # Compare against jaxmarl's own step_env on the same state and key.
        act = env.random_actions(k_act)
        k_env, _ = jax.random.split(k_step)
        ref_obs, _, ref_rew, ref_done, _ = env.env.step_env(k_env, state.inner, {a: act[i] for i, a in enumerate(env.agents)})
        state, tr = step(k_step, state, act)
        np.testing.assert_allclose(tr.final_obs, np.stack([ref_obs[a] for a in env.agents]), rtol=1e-6)
        np.testing.assert_allclose(tr.reward, np.stack([ref_rew[a] for a in env.agents]), rtol=1e-6)
        assert bool(tr.truncated) == bool(ref_done["__all__"]) and not bool(tr.terminated)
        # MPE: the global state is the concatenated observations, every action is available, no wins.
        np.testing.assert_array_equal(tr.final_state, tr.final_obs.reshape(-1))
        assert tr.final_avail.shape == (env.num_agents, env.num_actions) and bool(tr.final_avail.all())
        assert not bool(tr.won)
        total += float(tr.reward.mean())
        if bool(tr.truncated):
            ends.append(t)
            assert abs(float(tr.episode_return) - total) < 1e-4
            assert float(tr.episode_length) == t + 1 - (ends[-2] + 1 if len(ends) > 1 else 0)
            assert not np.allclose(tr.obs, tr.final_obs)  # reset observation differs from the final one
            total = 0.0
        else:
            np.testing.assert_array_equal(tr.obs, tr.final_obs)
            assert float(tr.episode_return) == 0.0
    # jaxmarl's MPE ends an episode when the step counter reaches max_steps=25: 26 transitions.
    assert ends == [25, 51]


def test_mpe_world_state_concatenates_agent_observations():
    obs = jnp.arange(2 * 3 * 4.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(concatenated_observations(obs), obs.reshape(2, 12))
