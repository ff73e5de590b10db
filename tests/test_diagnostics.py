"""The training diagnostics against numpy, hand-computed cases and closed forms: the policy-gradient spread
(``pg_var``, ``pg_snr``) and the critic's explained variance (``critic_ev``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perla_jax import Config, make_trainer
from perla_jax.diagnostics import (
    explained_variance, gradient_spread, per_env_policy_gradients, policy_gradient_spread
)
from perla_jax.losses import normalise
from perla_jax.rollout import rollout


def test_gradient_spread_matches_numpy():
    rng = np.random.default_rng(0)
    grads = {"a": rng.normal(size=(7, 3, 2)), "b": rng.normal(loc=0.5, size=(7, 4))}
    flat = np.concatenate([grads["a"].reshape(7, -1), grads["b"]], axis=1)
    trace, snr = gradient_spread(jax.tree.map(jnp.asarray, grads))
    want = flat.var(axis=0, ddof=1).sum()
    np.testing.assert_allclose(trace, want, rtol=1e-5)
    np.testing.assert_allclose(snr, (flat.mean(axis=0) ** 2).sum() / (want / 7) - 1, rtol=1e-5)


def _snr_draws(key, mean: np.ndarray, scale: float, envs: int, draws: int) -> np.ndarray:
    """pg_snr of ``draws`` independent batches of ``envs`` Gaussian gradients N(mean, scale^2 I), ``mean`` ``[P]``
    split over two leaves as a parameter tree would be."""
    g = jnp.asarray(mean) + scale * jax.random.normal(key, (draws, envs, mean.size))
    tree = lambda x: {"w": x[:, :10].reshape(envs, 2, 5), "b": x[:, 10:]}
    return np.asarray(jax.vmap(lambda x: gradient_spread(tree(x))[1])(g))


@pytest.mark.parametrize("true_snr", [0.0, 3.0])
def test_pg_snr_estimates_the_true_signal_to_noise_ratio(true_snr):
    """Batches of E gradients N(m, s^2 I) in P dimensions: the true SNR is ||m||^2 / (P s^2 / E). The Gaussian mean
    and sample covariance are independent, and tr Cov^ ~ P s^2 chi^2_d / d with d = P (E - 1), so the estimate's
    exact expectation is (true + 1) d / (d - 2) - 1: within 0.4% of the truth here. Pure noise gives ~0 (it was ~1
    before the 1 was subtracted). Tolerance: 4 standard errors of the mean over the draws."""
    envs, dims, scale, draws = 16, 40, 0.7, 4000
    direction = np.random.default_rng(0).normal(size=dims)
    mean = direction / np.linalg.norm(direction) * np.sqrt(true_snr * dims * scale**2 / envs)
    snr = _snr_draws(jax.random.PRNGKey(1), mean, scale, envs, draws)
    d = dims * (envs - 1)
    expected = (true_snr + 1) * d / (d - 2) - 1
    assert abs(snr.mean() - expected) < 4 * snr.std() / np.sqrt(draws), (snr.mean(), expected)
    assert abs(snr.mean() - true_snr) < 0.05 * (true_snr + 1), (snr.mean(), true_snr)
    if true_snr == 0:
        assert snr.min() < 0  # single batches of pure noise fall below 0


def test_explained_variance_by_hand():
    targets = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(2, 1, 2)  # [T, E, N]
    # Residuals (0, 0, 0, -2): variance 1 - 0.5^2 = 0.75 against the targets' 1.25, so 1 - 0.75 / 1.25 = 0.4.
    worse = jnp.array([1.0, 2.0, 3.0, 6.0]).reshape(2, 1, 2)
    assert float(explained_variance(targets, worse)) == pytest.approx(0.4)
    assert float(explained_variance(targets, targets)) == 1.0
    assert float(explained_variance(targets, targets + 3.0)) == 1.0  # an offset is not penalised
    assert float(explained_variance(targets, jnp.full_like(targets, 2.5))) == 0.0  # the targets' mean
    assert float(explained_variance(targets, -targets)) == pytest.approx(1 - 4 * 1.25 / 1.25)  # worse than the mean


def test_explained_variance_is_nan_without_variance_to_explain():
    predictions = jnp.array([0.0, 1.0, -1.0, 2.0]).reshape(2, 1, 2)
    for value in (0.0, 0.1, -37.3):  # 0.1 is not a float32: its mean can differ from it in the last bit
        assert np.isnan(float(explained_variance(jnp.full((2, 1, 2), value), predictions))), value
    # A real spread of 1e-4 on targets of size 100 is kept (relative variance 1e-12 > float32 rounding's ~1e-14).
    targets = 100.0 + 1e-2 * jnp.array([1.0, -1.0, 1.0, -1.0]).reshape(2, 1, 2)
    assert float(explained_variance(targets, targets)) == 1.0


def test_pg_var_equals_the_closed_form_of_the_score_variance():
    """One agent in the one-step credit game, advantages set to 1: each environment's estimate is the mean over
    its T steps of the score grad log pi(a|o), whose mean is 0, so the trace of its covariance over environments
    is E_o[sum_a pi(a|o) |grad log pi(a|o)|^2] / T, computed here by enumerating contexts and actions."""
    contexts, steps, envs = 3, 2, 4000
    cfg = Config(env="credit", env_kwargs={"num_agents": 1, "num_contexts": contexts, "num_actions": 3},
                 algo="ippo", num_envs=envs, num_steps=steps, total_timesteps=envs * steps, num_minibatches=1,
                 actor_hidden=(4,), critic_hidden=(4,))
    trainer = make_trainer(cfg)
    agents = trainer.agents
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    # Larger weights than at initialisation, so the policy is far from uniform and the check is not symmetric.
    params = jax.tree.map(lambda x: 30.0 * x, state.actor.params)

    @jax.jit
    def measured():
        _, _, traj, *_ = rollout(trainer.env, agents, params, state.env_state, state.obs, jax.random.PRNGKey(1), steps)
        grads = per_env_policy_gradients(agents, params, traj, jnp.ones_like(traj.reward), None)
        return gradient_spread(grads)[0]

    def squared_score(obs, action):
        grad = jax.grad(lambda p: agents.policy(p, obs).log_prob(action)[0])(params)
        return sum(jnp.sum(g**2) for g in jax.tree.leaves(grad))

    closed_form = 0.0
    for c in range(contexts):
        obs = jax.nn.one_hot(jnp.array([c]), contexts)  # [N=1, O]
        probs = np.asarray(agents.policy(params, obs).probs)[0]
        closed_form += sum(probs[a] * float(squared_score(obs, jnp.array([a]))) for a in range(3)) / contexts
    closed_form /= steps
    got = float(measured())
    # 4000 environments: the variance estimate's relative sampling error is a few percent.
    assert abs(got / closed_form - 1) < 0.1, (got, closed_form)


def test_train_step_reports_the_spread_of_its_rollout():
    cfg = Config(num_envs=4, num_steps=8, total_timesteps=64, num_minibatches=2, update_epochs=1, k=2,
                 actor_hidden=(8,), critic_hidden=(8,))
    trainer = make_trainer(cfg)
    _, metrics = jax.jit(lambda k: trainer.run_updates(trainer.init(k), 1))(jax.random.PRNGKey(0))
    assert float(metrics["pg_var"][0]) > 0 and np.isfinite(float(metrics["pg_snr"][0]))


def test_pg_spread_every_skips_the_spread_between_and_changes_nothing_else():
    """pg_spread_every=2 (over 5 updates: two blocks, then one update without): the spread at updates 2 and 4
    equals the every-update run's, NaN at 1, 3 and 5; every other metric and the trained state are identical."""
    cfg = Config(num_envs=4, num_steps=8, total_timesteps=5 * 32, num_minibatches=2, update_epochs=1, k=2,
                 actor_hidden=(8,), critic_hidden=(8,))
    runs = {}
    for every in (1, 2):
        trainer = make_trainer(cfg.replace(pg_spread_every=every))
        runs[every] = jax.jit(lambda k: trainer.run_updates(trainer.init(k), 5))(jax.random.PRNGKey(0))
    (state1, m1), (state2, m2) = runs[1], runs[2]
    for name in ("pg_var", "pg_snr"):
        assert np.isnan(np.asarray(m2[name])[[0, 2, 4]]).all() and np.isfinite(np.asarray(m1[name])).all()
        np.testing.assert_array_equal(np.asarray(m2[name])[[1, 3]], np.asarray(m1[name])[[1, 3]])
    for name in set(m1) - {"pg_var", "pg_snr"}:
        np.testing.assert_array_equal(np.asarray(m2[name]), np.asarray(m1[name]), err_msg=name)
    for a, b in zip(jax.tree.leaves(state2), jax.tree.leaves(state1)):
        np.testing.assert_array_equal(a, b)


def test_pg_var_is_measured_on_batch_normalised_advantages():
    """The PPO loss normalises the advantages, so scaling them changes nothing it does: nor, now, pg_var and
    pg_snr (unnormalised, pg_var grew with the square of the scale). The normalisation uses the whole batch."""
    envs, steps = 64, 4
    cfg = Config(env="credit", env_kwargs={"num_agents": 2, "num_contexts": 3, "num_actions": 3}, algo="ippo",
                 num_envs=envs, num_steps=steps, total_timesteps=envs * steps, num_minibatches=1, actor_hidden=(4,),
                 critic_hidden=(4,))
    trainer = make_trainer(cfg)
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    _, _, traj, *_ = rollout(trainer.env, trainer.agents, state.actor.params, state.env_state, state.obs,
                             jax.random.PRNGKey(1), steps)
    advantages = 0.3 + jax.random.normal(jax.random.PRNGKey(2), traj.reward.shape)
    spread = jax.jit(lambda adv: policy_gradient_spread(trainer.agents, state.actor.params, traj, adv, None))
    raw = jax.jit(lambda adv: gradient_spread(per_env_policy_gradients(trainer.agents, state.actor.params, traj,
                                                                       adv, None)))
    pg_var, pg_snr = spread(advantages)
    scaled_var, scaled_snr = spread(7.0 * advantages)
    np.testing.assert_allclose([scaled_var, scaled_snr], [pg_var, pg_snr], rtol=1e-4)
    np.testing.assert_allclose(raw(7.0 * advantages)[0], 49.0 * raw(advantages)[0], rtol=1e-4)
    by_hand = (advantages - advantages.mean()) / advantages.std()  # one mean and deviation for the whole batch
    np.testing.assert_allclose(spread(advantages), raw(by_hand), rtol=1e-4)
    np.testing.assert_allclose(spread(advantages), raw(normalise(advantages)), rtol=1e-6)
