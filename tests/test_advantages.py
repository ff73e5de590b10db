"""TD(lambda) returns, GAE, advantages and PPO losses against hand-computed values."""

import jax.numpy as jnp
import numpy as np
import pytest

from perla_jax.advantages import (
    ADVANTAGE_ESTIMATORS,
    MarginalValues,
    TDLambda,
    gae,
    lambda_returns,
    next_step_values,
)
from perla_jax.losses import clipped_value_loss, normalise, ppo_actor_loss

R = jnp.array([1.0, 2.0, 3.0, 4.0])
NEXT_V = jnp.array([10.0, 20.0, 30.0, 40.0])
NONE = jnp.zeros(4, bool)


def test_lambda_returns_by_hand_with_truncation():
    # gamma = lam = 0.5; the episode is truncated at t = 1: bootstrap on next_v[1], cut the recursion.
    end = jnp.array([False, True, False, False])
    got = lambda_returns(R, NEXT_V, NONE, end, 0.5, 0.5)
    # G3 = 4 + .5*40 = 24; G2 = 3 + .5*(30 + .5*(24-30)) = 16.5; G1 = 2 + .5*20 = 12;
    # G0 = 1 + .5*(10 + .5*(12-10)) = 6.5
    np.testing.assert_allclose(got, [6.5, 12.0, 16.5, 24.0])


def test_lambda_returns_by_hand_with_termination():
    term = jnp.array([False, True, False, False])
    got = lambda_returns(R, NEXT_V, term, term, 0.5, 0.5)
    # G1 = 2 (no bootstrap); G0 = 1 + .5*(10 + .5*(2-10)) = 4
    np.testing.assert_allclose(got, [4.0, 2.0, 16.5, 24.0])


def test_lambda_zero_is_one_step_target_and_lambda_one_is_monte_carlo():
    np.testing.assert_allclose(lambda_returns(R, NEXT_V, NONE, NONE, 0.9, 0.0), R + 0.9 * NEXT_V)
    mc = lambda_returns(R, NEXT_V, NONE, NONE, 1.0, 1.0)
    np.testing.assert_allclose(mc, [50.0, 49.0, 47.0, 44.0])  # rewards to go + next_v[-1] = 40


def classic_gae(r, v, v_last, term, end, gamma, lam):
    """Textbook loop: delta_t = r + gamma (1-term) v_{t+1} - v_t; A_t = delta_t + gamma lam (1-end_t) A_{t+1}."""
    T = len(r)
    adv = np.zeros(T)
    nxt = 0.0
    for t in reversed(range(T)):
        v_next = v_last[t] if (end[t] or t == T - 1) else v[t + 1]
        delta = r[t] + gamma * (1 - term[t]) * v_next - v[t]
        nxt = delta + gamma * lam * (1 - end[t]) * nxt
        adv[t] = nxt
    return adv


def test_gae_matches_textbook_loop_with_mixed_episode_ends():
    rng = np.random.default_rng(0)
    T = 12
    r, v, v_final = rng.normal(size=T), rng.normal(size=T), rng.normal(size=T)
    term = np.zeros(T, bool)
    trunc = np.zeros(T, bool)
    term[3], trunc[7] = True, True
    end = term | trunc
    nv = next_step_values(jnp.asarray(v)[:, None, None], jnp.asarray(v_final)[:, None, None], jnp.asarray(end)[:, None])
    got, returns = gae(
        jnp.asarray(r)[:, None, None], jnp.asarray(v)[:, None, None], nv,
        jnp.asarray(term)[:, None, None], jnp.asarray(end)[:, None, None], 0.99, 0.95,
    )
    want = classic_gae(r, v, v_final, term, end, 0.99, 0.95)
    np.testing.assert_allclose(got[:, 0, 0], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(returns[:, 0, 0], want + v, rtol=1e-5, atol=1e-5)


def test_next_step_values_uses_final_value_only_at_ends_and_last_step():
    values = jnp.arange(4.0)[:, None, None]
    final = 10.0 + jnp.arange(4.0)[:, None, None]
    ended = jnp.array([False, True, False, False])[:, None]
    np.testing.assert_array_equal(next_step_values(values, final, ended)[:, 0, 0], [1.0, 11.0, 3.0, 13.0])


def one_step_advantages(name: str, q_taken, v_now, q_joint, reward):
    """The registered estimator on one-step episodes (every step terminates), one per environment ``[E, N]``."""
    shape = q_taken.shape
    ends = jnp.ones(shape[:1], bool)[None]
    values = MarginalValues(q_taken=q_taken[None], v_now=v_now[None], v_final=jnp.zeros(shape)[None], ended=ends,
                            q_joint=q_joint[None])
    td = TDLambda(rewards=reward[None], terminated=ends, ended=ends, gamma=0.9, lam=0.9)
    returns, advantages = ADVANTAGE_ESTIMATORS[name](values, td)
    return returns[0], advantages[0]


def test_control_variate_advantages_by_hand_on_one_step_episodes():
    # Two environments, one agent: on a one-step episode the lambda-return is the reward, td's advantage r - V^,
    # and the control variate subtracts beta c with c = Q(s, a_i, a_-i) - Q^_i(s, a_i).
    q_taken, v_now = jnp.array([[1.0], [0.0]]), jnp.array([[0.5], [0.5]])
    q_joint, reward = jnp.array([[3.0], [-1.0]]), jnp.array([[2.0], [-1.0]])
    td_adv = np.array([[1.5], [-1.5]])
    c = np.array([[2.0], [-1.0]])
    for name, beta in (("td", 0.0), ("perla_cv1", 1.0)):
        returns, adv = one_step_advantages(name, q_taken, v_now, q_joint, reward)
        np.testing.assert_allclose(returns, reward)
        np.testing.assert_allclose(adv, td_adv - beta * c, rtol=1e-6)
    # auto: beta = Cov(A, C) / Var(C) over the batch = ((1.5)(1.5) + (-1.5)(-1.5)) / (1.5^2 + 1.5^2) = 1 (C centred
    # is [1.5, -1.5]), clipped to [0, 1]; with c's sign flipped the covariance is negative and beta clips to 0.
    np.testing.assert_allclose(one_step_advantages("perla_cv", q_taken, v_now, q_joint, reward)[1], td_adv - c,
                               rtol=1e-5)
    flipped = 2 * q_taken - q_joint  # c -> -c
    np.testing.assert_allclose(one_step_advantages("perla_cv", q_taken, v_now, flipped, reward)[1], td_adv,
                               rtol=1e-6)


def test_ppo_actor_loss_at_ratio_one_and_when_clipped():
    adv = jnp.array([1.0, -2.0])
    ent = jnp.array([0.5, 0.7])
    lp = jnp.log(jnp.array([0.3, 0.6]))
    loss, stats = ppo_actor_loss(lp, lp, adv, ent, 0.2, 0.1)
    assert float(stats["actor_loss"]) == pytest.approx(0.5)  # -mean(adv)
    assert float(loss) == pytest.approx(0.5 - 0.1 * 0.6)
    assert float(stats["approx_kl"]) == pytest.approx(0.0, abs=1e-7)
    # ratio 2 on a positive advantage is clipped at 1.2; ratio 0.5 on a negative one at 0.8.
    _, stats = ppo_actor_loss(lp + jnp.log(jnp.array([2.0, 0.5])), lp, adv, ent, 0.2, 0.0)
    assert float(stats["actor_loss"]) == pytest.approx(-(1.2 * 1.0 + 0.8 * -2.0) / 2)
    assert float(stats["clip_frac"]) == 1.0
    assert float(stats["approx_kl"]) == pytest.approx(((1 - np.log(2)) + (-0.5 + np.log(2))) / 2)


def test_clipped_value_loss_by_hand():
    # prediction moved from 0 to 1 with clip 0.2 towards a target of 2: max(1^2, 1.8^2) / 2.
    assert float(clipped_value_loss(jnp.array([1.0]), jnp.array([0.0]), jnp.array([2.0]), 0.2)) == pytest.approx(1.62)
    # moving away from an overshoot is not clipped: max(0.5^2, 0.3^2)/2
    assert float(clipped_value_loss(jnp.array([0.5]), jnp.array([0.0]), jnp.array([1.0]), 0.2)) == pytest.approx(0.32)


def test_normalise():
    x = normalise(jnp.array([1.0, 2.0, 3.0, 6.0]))
    assert float(x.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(x.std()) == pytest.approx(1.0, abs=1e-6)


def test_estimate_bootstraps_on_truncation_not_termination_on_a_hand_made_trajectory():
    """The trainer's critic targets on a 4-step trajectory: truncated at t=1, terminated at t=3."""
    import jax

    from perla_jax import Config, make_env
    from perla_jax.agents import Agents
    from perla_jax.critics import make_critic
    from perla_jax.envs.base import concatenated_observations
    from perla_jax.types import Trajectory

    cfg = Config(algo="mappo", gamma=0.9, gae_lambda=0.0, num_envs=1, num_steps=32, total_timesteps=32, num_minibatches=1)
    env = make_env(cfg.env)
    agents = Agents.build(cfg, env)
    critic = make_critic(cfg, env, agents)
    params = critic.init(jax.random.PRNGKey(0))
    T, N, O = 4, env.num_agents, env.obs_dim
    obs = jax.random.normal(jax.random.PRNGKey(1), (T, 1, N, O))
    final_obs = jax.random.normal(jax.random.PRNGKey(2), (T, 1, N, O))
    reward = jnp.arange(T * N, dtype=jnp.float32).reshape(T, 1, N)
    avail = jnp.ones((T, 1, N, env.num_actions), bool)
    traj = Trajectory(
        obs=obs, action=jnp.zeros((T, 1, N), jnp.int32), log_prob=jnp.zeros((T, 1, N)), reward=reward,
        final_obs=final_obs, terminated=jnp.array([[False], [False], [False], [True]]),
        truncated=jnp.array([[False], [True], [False], [False]]),
        episode_return=jnp.zeros((T, 1)), episode_length=jnp.zeros((T, 1)),
        state=concatenated_observations(obs), final_state=concatenated_observations(final_obs), avail=avail, final_avail=avail,
        won=jnp.zeros((T, 1), bool),
    )
    est = critic.estimate(agents.init_actor(jax.random.PRNGKey(3)), params, traj, jax.random.PRNGKey(4))
    state_values = lambda o: critic.network.apply(params, critic.inputs.features(o, concatenated_observations(o)))
    v = np.asarray(state_values(obs))[:, 0]
    v_final = np.asarray(state_values(final_obs))[:, 0]
    r = np.asarray(reward)[:, 0]
    want = np.stack([r[0] + 0.9 * v[1], r[1] + 0.9 * v_final[1], r[2] + 0.9 * v[3], r[3]])
    np.testing.assert_allclose(est.targets[:, 0], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(est.advantages[:, 0], want - v, rtol=1e-5, atol=1e-5)
