"""Continuous actions: the masked Gaussian, the real-action critic, and PERLA's estimators against closed forms.

Closed form: for a quadratic critic Q(a) = a^T W a + b^T a on the joint action and independent Gaussian
policies a_j ~ N(mu_j, diag s_j^2), E[Q] = m^T W m + tr(W S) + b^T m with m the mean and S the (diagonal)
covariance of the random part. Fixing agent i's action gives E over a_-i (Q^_i's target); letting it vary
too gives V_i (the M-sample baseline's target).
"""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perla_jax import Config
from perla_jax.agents import Agents
from perla_jax.critics import ContinuousQCritic
from perla_jax.critics.continuous_q import marginal_q_samples
from perla_jax.marginalisation import marginalise
from perla_jax.networks.continuous import ContinuousQNetwork, GaussianActor, MaskedDiagNormal
from perla_jax.networks.heads import GaussianHead

N, A = 3, 2
MASK = np.array([[True, False], [True, True], [True, True]])  # agent 0 has one real action dim
MU = np.array([[0.3, 0.0], [-0.5, 0.8], [0.1, -0.2]])
SIGMA = np.array([[0.7, 1.0], [0.4, 1.2], [0.9, 0.5]])
RNG = np.random.default_rng(0)
W = RNG.normal(size=(N * A, N * A))
B = RNG.normal(size=N * A)


def quadratic(i, joint):
    a = joint.reshape(-1)
    return a @ W @ a + B @ a


def closed_form(mean, var):
    """E[a^T W a + b^T a] for a ~ N(mean, diag var), flattened ``[N*A]``."""
    return mean @ W @ mean + np.sum(np.diag(W) * var) + B @ mean


def policy():
    return MaskedDiagNormal(jnp.asarray(MU), jnp.asarray(SIGMA), jnp.asarray(MASK))


def real(x):
    return np.where(MASK, x, 0.0).reshape(-1)


def test_masked_gaussian_ignores_padded_dims():
    base, other = policy(), MaskedDiagNormal(jnp.asarray(MU) + 5.0 * ~MASK, jnp.asarray(SIGMA) * (1 + 3.0 * ~MASK), MASK)
    x = jnp.asarray(RNG.normal(size=(N, A)))
    x_pad = x + 7.0 * ~MASK
    for d in (base, other):
        np.testing.assert_allclose(d.log_prob(x), base.log_prob(x_pad), rtol=1e-6)
        np.testing.assert_allclose(d.entropy(), base.entropy(), rtol=1e-6)
    # Against distrax's MultivariateNormalDiag on the real dims of each agent.
    for i in range(N):
        dims = MASK[i]
        ref = distrax.MultivariateNormalDiag(MU[i, dims], SIGMA[i, dims])
        np.testing.assert_allclose(base.log_prob(x)[i], ref.log_prob(x[i, dims]), rtol=1e-5)
        np.testing.assert_allclose(base.entropy()[i], ref.entropy(), rtol=1e-5)
    draws = base.sample(seed=jax.random.PRNGKey(0), sample_shape=(4,))
    assert draws.shape == (4, N, A) and np.all(np.asarray(draws)[:, ~MASK] == 0.0)
    np.testing.assert_allclose(base.mode(), np.where(MASK, MU, 0.0), rtol=1e-6)


def _samplers(k, m):
    """(agents, critic): the others' K joint samples come from the agents, the M own samples from the critic."""
    cfg = Config(k=k, own_action_samples=m, num_envs=2, num_steps=8, total_timesteps=16)
    mask = tuple(tuple(bool(v) for v in row) for row in MASK)
    agents = Agents(cfg, N, 4, GaussianHead(GaussianActor(A, (8,)), mask))
    return agents, ContinuousQCritic(cfg, ContinuousQNetwork(N, A, (8,), "tanh"), None, agents)


@pytest.fixture(scope="module")
def estimators():
    """Jitted draws of Q^_i(s, a_i) (K samples) and V^_i(s) (M x K samples) for the quadratic critic."""

    def draw(key, agents, critic):
        k_others, k_own = jax.random.split(key)
        joint = agents.sample_others(k_others, policy())  # [K, N, A]
        own = critic.sample_own(k_own, policy())  # [N, M, A]
        own_fixed = jnp.asarray(np.where(MASK, 0.5, 0.0))  # Q^ at a fixed own action
        q_hat = marginalise(quadratic, own_fixed, joint)  # [N]
        v_hat = jax.vmap(lambda o: marginalise(quadratic, o, joint), in_axes=1)(own).mean(axis=0)  # [N]
        return q_hat, v_hat

    def run(k, m, reps=4000, seed=0):
        agents, critic = _samplers(k, m)
        keys = jax.random.split(jax.random.PRNGKey(seed), reps)
        return jax.jit(jax.vmap(lambda key: draw(key, agents, critic)))(keys)

    return run


def _expected():
    var = np.where(MASK, SIGMA**2, 0.0)
    q_true, v_true = [], []
    for i in range(N):
        mean = np.where(MASK, MU, 0.0).copy()
        mean[i] = np.where(MASK[i], 0.5, 0.0)
        v = var.copy()
        v[i] = 0.0
        q_true.append(closed_form(mean.reshape(-1), v.reshape(-1)))
        v_true.append(closed_form(real(MU), var.reshape(-1)))
    return np.array(q_true), np.array(v_true)


@pytest.mark.parametrize("k,m", [(1, 1), (4, 3)])
def test_marginal_and_baseline_are_unbiased(estimators, k, m):
    q_hat, v_hat = map(np.asarray, estimators(k, m))
    q_true, v_true = _expected()
    for est, true in ((q_hat, q_true), (v_hat, v_true)):
        se = est.std(axis=0) / np.sqrt(est.shape[0])
        assert np.all(np.abs(est.mean(axis=0) - true) < 4 * se), (est.mean(axis=0), true, se)


def test_marginal_variance_falls_as_one_over_k(estimators):
    var_1 = np.asarray(estimators(1, 1, seed=1)[0]).var(axis=0)
    var_8 = np.asarray(estimators(8, 1, seed=2)[0]).var(axis=0)
    # Var over K iid draws is Var/K exactly; with 4000 replications the ratio's sampling error is ~3%.
    np.testing.assert_allclose(var_8 * 8 / var_1, 1.0, atol=0.15)


def test_split_first_layer_equals_plain_mlp():
    critic = ContinuousQNetwork(N, A, (8, 8), "tanh")
    key = jax.random.PRNGKey(3)
    features = jax.random.normal(key, (2, N, 5))  # [E, N, F]
    joint = jax.random.normal(jax.random.fold_in(key, 1), (2, 4, N, A))  # [E, K, N, A]
    own = jax.random.normal(jax.random.fold_in(key, 2), (2, N, 3, A))  # [E, N, M, A]
    params = critic.init(key, features[0, 0], joint[0, 0])

    @jax.jit
    def both(params):
        fast = marginal_q_samples(critic, params, features, joint, own)  # [E, N, M, K]
        # The definition: agent i's own action written into slot i of each sampled joint action.
        slot = np.eye(N, dtype=bool)[:, None, None, :, None]  # [N(i), 1, 1, N(slot), 1]
        full = jnp.where(slot, own[:, :, :, None, None, :], joint[:, None, None])  # [E, N, M, K, N, A]
        return fast, critic.apply(params, jnp.broadcast_to(features[:, :, None, None], (2, N, 3, 4, 5)), full)

    fast, plain = both(params)
    assert fast.shape == (2, N, 3, 4)
    np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-6)


def test_own_action_samples_validated():
    with pytest.raises(ValueError, match="own_action_samples=0"):
        Config(own_action_samples=0)
