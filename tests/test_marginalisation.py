"""The marginalised critic against exact enumeration on a small matrix game (Theorem 1)."""

import itertools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perla_jax import Config, make_env, marginal_q, marginal_q_head, marginalise, q_head_samples, sample_joint_actions
from perla_jax.marginalisation import marginal_and_joint_q, sample_variance
from perla_jax.agents import Agents
from perla_jax.critics import make_critic
from perla_jax.networks.discrete import others_one_hot

N, A = 3, 3


@pytest.fixture(scope="module")
def game():
    """A 3-agent, 3-action one-step game: a random payoff table per agent and fixed policies."""
    rng = np.random.default_rng(0)
    q = rng.normal(size=(N,) + (A,) * N).astype(np.float32)  # q[i, a_0, a_1, a_2]
    probs = rng.dirichlet(np.ones(A), size=N).astype(np.float32)  # [N, A]
    return q, probs


def exact_moments(q, probs, i, own):
    """Mean, variance and 4th central moment of Q(s, own, a_-i) under a_-i ~ pi_-i, by enumeration."""
    values, weights = [], []
    for joint in itertools.product(range(A), repeat=N):
        if joint[i] != own:
            continue
        values.append(q[(i,) + joint])
        weights.append(np.prod([probs[j, joint[j]] for j in range(N) if j != i]))
    v, w = np.array(values, np.float64), np.array(weights, np.float64)
    mean = (w * v).sum()
    return mean, (w * (v - mean) ** 2).sum(), (w * (v - mean) ** 4).sum()


def table_q_fn(q):
    table = jnp.asarray(q)
    return lambda i, joint: table[(i, *joint)]


def replicate(q, probs, own, k, reps, seed):
    """``reps`` independent PERLA estimates with K=k: ``[reps, N]``."""
    policy = distrax.Categorical(probs=jnp.asarray(probs))
    q_fn = table_q_fn(q)

    def one(key):
        return marginalise(q_fn, own, sample_joint_actions(key, policy, k))

    return np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(seed), reps)), np.float64)


@pytest.mark.parametrize("k", [1, 4, 16])
def test_unbiased_and_variance_is_conditional_variance_over_k(game, k):
    """Conditional form of Theorem 1: at fixed (s, a_i), E[Q^] = Q~ and Var(Q^ | a_i) = Var(Q | a_i) / K."""
    q, probs = game
    own = jnp.array([2, 0, 1])
    reps = 20_000
    est = replicate(q, probs, own, k, reps, seed=k)
    for i in range(N):
        mean, var, m4 = exact_moments(q, probs, i, int(own[i]))
        var_k = var / k
        # Standard error of the sample mean, and of the sample variance of a mean of K iid draws.
        assert abs(est[:, i].mean() - mean) < 4.5 * np.sqrt(var_k / reps)
        m4_k = (m4 + 3 * (k - 1) * var**2) / k**3
        se_var = np.sqrt((m4_k - var_k**2) / reps)
        assert abs(est[:, i].var() - var_k) < 4.5 * se_var, (i, est[:, i].var(), var_k)


def test_more_samples_strictly_reduce_variance(game):
    q, probs = game
    own = jnp.array([1, 1, 1])
    v1 = replicate(q, probs, own, 1, 5000, seed=10).var(axis=0)
    v16 = replicate(q, probs, own, 16, 5000, seed=11).var(axis=0)
    assert np.all(v16 < v1 / 8)


def test_own_action_is_fixed_and_sampled_own_action_is_ignored():
    own = jnp.array([4, 0, 2])
    samples = jax.random.randint(jax.random.PRNGKey(0), (7, N), 0, 5)
    got = marginalise(lambda i, joint: joint[i].astype(jnp.float32), own, samples)
    np.testing.assert_array_equal(got, own.astype(jnp.float32))


def test_agents_are_not_mixed_up():
    own = jnp.array([4, 0, 2])
    samples = jax.random.randint(jax.random.PRNGKey(1), (9, N), 0, 5)
    # Agent i's value depends on its own action, its index and the next agent's sampled action.
    got = marginalise(lambda i, joint: 100.0 * i + 10.0 * joint[i] + joint[(i + 1) % N], own, samples)
    s = np.asarray(samples, np.float64)
    want = [100 * i + 10 * int(own[i]) + s[:, (i + 1) % N].mean() for i in range(N)]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_continuous_actions_match_a_python_loop():
    key_own, key_samples = jax.random.split(jax.random.PRNGKey(2))
    own = jax.random.normal(key_own, (N, 2))
    samples = jax.random.normal(key_samples, (5, N, 2))
    weights = jnp.arange(1.0, 1.0 + 2 * N).reshape(N, 2)

    def q_fn(i, joint):
        return jnp.sum(weights * joint) ** 2 - 0.5 * i * jnp.sum(joint[i])

    got = marginalise(q_fn, own, samples)
    s, o, w = np.asarray(samples), np.asarray(own), np.asarray(weights)
    want = []
    for i in range(N):
        vals = []
        for k in range(s.shape[0]):
            joint = s[k].copy()
            joint[i] = o[i]
            vals.append((w * joint).sum() ** 2 - 0.5 * i * joint[i].sum())
        want.append(np.mean(vals))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_sampler_draws_independently_per_sample_and_agent():
    probs = jnp.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    k = 40_000
    samples = np.asarray(sample_joint_actions(jax.random.PRNGKey(3), distrax.Categorical(probs=probs), k))
    assert samples.shape == (k, N)
    se = np.sqrt(0.25 / k)
    for i in range(N):
        freq = np.bincount(samples[:, i], minlength=A) / k
        np.testing.assert_allclose(freq, probs[i], atol=5 * se)
    # Independence across agents and across consecutive samples: joint frequencies factorise.
    for a_col, b_col, pa, pb in [
        (samples[:, 0], samples[:, 1], probs[0], probs[1]),
        (samples[:-1, 2], samples[1:, 2], probs[2], probs[2]),
    ]:
        joint = np.zeros((A, A))
        np.add.at(joint, (a_col, b_col), 1.0)
        np.testing.assert_allclose(joint / len(a_col), np.outer(pa, pb), atol=5 * se)


def test_sampler_batches_environments_independently():
    probs = jnp.tile(jnp.array([0.5, 0.5])[None, None], (2, 1, 1))  # [E=2, N=1, 2]
    s = np.asarray(sample_joint_actions(jax.random.PRNGKey(4), distrax.Categorical(probs=probs), 20_000))
    assert s.shape == (20_000, 2, 1)
    assert abs(np.corrcoef(s[:, 0, 0], s[:, 1, 0])[0, 1]) < 0.03


def _reference_q(params, features, others, action_layer: int, num_layers: int):
    """The critic's definition written out: a tanh MLP on (features, others' one-hot actions) whose
    actions enter hidden layer ``action_layer`` through a dense layer. features ``[F]``, others ``[N*A]``
    -> ``[A]``."""
    p, x = params["params"], features
    for layer in range(num_layers):
        name = f"state_layers_{layer}" if layer <= action_layer else f"post_layers_{layer - action_layer - 1}"
        z = x @ p[name]["kernel"] + p[name]["bias"]
        if layer == action_layer:
            z = z + others @ p["action_in"]
        x = jnp.tanh(z)
    return x @ p["out"]["kernel"] + p["out"]["bias"]


@pytest.mark.parametrize("action_layer", ["first", "last"])
def test_critic_head_marginal_equals_generic_marginalise(action_layer):
    """The K-pass head over every own action (shared state part, embedding lookups, output layer applied
    to the mean) agrees with marginalise() over the critic's plain MLP definition, for each own action;
    and the cheap variance at the taken actions equals the per-sample variance."""
    cfg = Config(algo="perla_mappo", k=6, num_envs=1, num_steps=32, total_timesteps=32, num_minibatches=1,
                 critic_hidden=(8, 6, 4), critic_action_layer=action_layer, critic_arch="mlp")
    env = make_env(cfg.env)
    critic = make_critic(cfg, env, Agents.build(cfg, env))
    params = critic.init(jax.random.PRNGKey(5))
    obs = jax.random.normal(jax.random.PRNGKey(6), (env.num_agents, env.obs_dim))
    samples = jax.random.randint(jax.random.PRNGKey(7), (cfg.k, env.num_agents), 0, env.num_actions)
    features = critic.inputs.features(obs, obs.reshape(-1))
    per_sample = q_head_samples(critic.network, params, features, samples)
    assert per_sample.shape == (env.num_agents, cfg.k, env.num_actions)
    q_hat, q_var = marginal_q(per_sample)
    layer_index = 0 if action_layer == "first" else 2

    def q_fn(i, joint):
        others = others_one_hot(joint, env.num_actions)[i]
        return _reference_q(params, features[i], others, layer_index, 3)[joint[i]]

    for a in range(env.num_actions):
        own = jnp.full((env.num_agents,), a)
        np.testing.assert_allclose(q_hat[:, a], marginalise(q_fn, own, samples), rtol=1e-5, atol=1e-6)
        cheap_q, cheap_var = marginal_q_head(critic.network, params, features, samples, own)
        np.testing.assert_allclose(cheap_q, q_hat, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cheap_var, q_var[:, a], rtol=1e-4, atol=1e-9)
    assert np.all(np.asarray(q_var) > 0)


@pytest.mark.parametrize("arch", ["factored", "mlp"])
def test_marginal_and_joint_q_is_the_marginal_and_the_critic_at_the_joint_action(arch):
    """One pass with the taken joint action as an extra sample gives what the marginal at the taken actions and a
    separate critic pass at the joint action give."""
    cfg = Config(algo="perla_mappo", k=6, num_envs=1, num_steps=32, total_timesteps=32, num_minibatches=1,
                 critic_hidden=(8, 6), critic_arch=arch,
                 **({"critic_others_scale": 1.0} if arch == "factored" else {}))  # the others' part not zero
    env = make_env(cfg.env)
    critic = make_critic(cfg, env, Agents.build(cfg, env))
    params = critic.init(jax.random.PRNGKey(5))
    obs = jax.random.normal(jax.random.PRNGKey(6), (2, env.num_agents, env.obs_dim))  # two states
    features = jax.vmap(lambda o: critic.inputs.features(o, o.reshape(-1)))(obs)
    samples = jax.random.randint(jax.random.PRNGKey(7), (2, cfg.k, env.num_agents), 0, env.num_actions)
    taken = jax.random.randint(jax.random.PRNGKey(8), (2, env.num_agents), 0, env.num_actions)
    q_hat, q_var, q_joint = marginal_and_joint_q(critic.network, params, features, samples, taken)
    want_hat, want_var = marginal_q_head(critic.network, params, features, samples, taken)
    np.testing.assert_allclose(q_hat, want_hat, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(q_var, want_var, rtol=1e-4, atol=1e-9)
    at_joint = critic.network.apply(params, features, taken)  # [2, N, A]
    want_joint = jnp.take_along_axis(at_joint, taken[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(q_joint, want_joint, rtol=1e-5, atol=1e-6)
    assert q_joint.shape == (2, env.num_agents) and float(jnp.std(q_joint)) > 0


def test_others_one_hot_blanks_own_slot():
    x = np.asarray(others_one_hot(jnp.array([1, 0, 2]), 3)).reshape(N, N, 3)
    for i in range(N):
        assert x[i, i].sum() == 0
        for j in range(N):
            if j != i:
                np.testing.assert_array_equal(x[i, j], np.eye(3)[[1, 0, 2][j]])


def test_sampler_never_draws_zero_probability_actions():
    """Masked (zero-probability) actions, first, middle and last, are never drawn; the rest keep their
    probabilities."""
    probs = jnp.array([[0.0, 0.3, 0.0, 0.7, 0.0], [0.5, 0.0, 0.0, 0.0, 0.5]])  # [N=2, A=5]
    s = np.asarray(sample_joint_actions(jax.random.PRNGKey(8), distrax.Categorical(probs=probs), 40_000))
    assert set(np.unique(s[:, 0])) == {1, 3} and set(np.unique(s[:, 1])) == {0, 4}
    np.testing.assert_allclose((s[:, 0] == 3).mean(), 0.7, atol=0.01)
    np.testing.assert_allclose((s[:, 1] == 4).mean(), 0.5, atol=0.01)


def test_sample_variance_is_unbiased_and_zero_for_one_sample():
    x = jnp.array([[1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_allclose(sample_variance(x, axis=-1), [5.0 / 3.0], rtol=1e-6)  # sum of squares 5 over K-1 = 3
    np.testing.assert_array_equal(sample_variance(x[:, :1], axis=-1), [0.0])
