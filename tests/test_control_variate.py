"""The control-variate advantage (``perla_cv``, ``perla_cv1``) on an enumerated one-step game: c has zero mean
whatever the critic, the policy gradient stays unbiased, and its variance falls with K where the others' actions
matter. Exact answers come from enumerating the 27 joint actions of 3 agents with 3 actions each. Last, the
others_share metric of the credit game's exact critic against its closed form (``credit_others_share``)."""

from __future__ import annotations

import itertools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perla_jax import ADVANTAGE_ESTIMATORS, marginalise, sample_joint_actions
from perla_jax.advantages import (
    MarginalValues, TDLambda, expected_value, others_share, take_action
)
from perla_jax.envs.credit import credit_others_share

N, A, NOISE, REPS = 3, 3, 1.0, 20_000
RNG = np.random.default_rng(0)
PAYOFF = RNG.normal(size=(A,) * N).astype(np.float32)  # the true team reward's mean, R(a_0, a_1, a_2)
LOGITS = RNG.normal(size=(N, A)).astype(np.float32)
PROBS = np.exp(LOGITS) / np.exp(LOGITS).sum(axis=1, keepdims=True)
CRITICS = {
    "exact": PAYOFF,
    "wrong": PAYOFF + 2.0 * RNG.normal(size=PAYOFF.shape).astype(np.float32),  # a critic with large errors
    "noise": 3.0 * RNG.normal(size=PAYOFF.shape).astype(np.float32),  # a critic unrelated to the game
}


def exact_gradient() -> np.ndarray:
    """d E[R] / d logits, ``[N, A]``: sum over joint actions of pi(a) R(a) (onehot(a_i) - pi_i)."""
    grad = np.zeros((N, A))
    for joint in itertools.product(range(A), repeat=N):
        p = np.prod([PROBS[i, a] for i, a in enumerate(joint)])
        for i, a in enumerate(joint):
            grad[i] += p * PAYOFF[joint] * (np.eye(A)[a] - PROBS[i])
    return grad


def draw(key, critic: np.ndarray, k: int):
    """One replicate of the game: (q_taken, v_now, q_joint, reward, score ``[N, A]``, taken actions ``[N]``)."""
    table = jnp.asarray(critic)
    policy = distrax.Categorical(logits=jnp.asarray(LOGITS))
    k_act, k_noise, k_samples = jax.random.split(key, 3)
    action = policy.sample(seed=k_act)  # [N]
    reward = jnp.asarray(PAYOFF)[tuple(action)] + NOISE * jax.random.normal(k_noise)
    samples = sample_joint_actions(k_samples, policy, k)  # [K, N]
    q_fn = lambda i, joint: table[tuple(joint)]
    q_hat = jax.vmap(lambda b: marginalise(q_fn, jnp.full((N,), b), samples))(jnp.arange(A))  # [A(own), N]
    q_taken = marginalise(q_fn, action, samples)  # [N]
    v_now = jnp.sum(q_hat.T * jnp.asarray(PROBS), axis=-1)  # [N]
    score = jax.nn.one_hot(action, A) - jnp.asarray(PROBS)  # d log pi_i(a_i) / d logits_i
    return q_taken, v_now, jnp.full((N,), table[tuple(action)]), reward, score, action


def advantages(batch, advantage: str) -> np.ndarray:
    """The registered estimator on all replicates at once, as one rollout ``[T=1, E=R, N]``: ``[R, N]``."""
    q_taken, v_now, q_joint, reward, _, _ = batch
    ends = jnp.ones((1, q_taken.shape[0]), bool)  # every episode terminates after its one step
    values = MarginalValues(q_taken=q_taken[None], v_now=v_now[None], v_final=jnp.zeros_like(v_now)[None],
                            ended=ends, q_joint=q_joint[None])
    td = TDLambda(rewards=jnp.broadcast_to(reward[:, None], q_taken.shape)[None], terminated=ends, ended=ends,
                  gamma=0.99, lam=0.95)
    return np.asarray(ADVANTAGE_ESTIMATORS[advantage](values, td)[1][0])


@pytest.fixture(scope="module")
def batches():
    """``get(critic, k)`` -> the replicates' arrays (leading axis R), cached."""
    cache = {}

    def get(critic: str, k: int):
        if (critic, k) not in cache:
            keys = jax.random.split(jax.random.PRNGKey(k), REPS)
            cache[critic, k] = jax.jit(jax.vmap(lambda key: draw(key, CRITICS[critic], k)))(keys)
        return cache[critic, k]

    return get


def gradients(batch, advantage: str) -> np.ndarray:
    """Per replicate, the policy-gradient estimate A_i grad log pi_i(a_i): ``[R, N, A]``."""
    return advantages(batch, advantage)[:, :, None] * np.asarray(batch[4])


@pytest.mark.parametrize("critic", sorted(CRITICS))
def test_c_has_zero_mean_given_the_own_action_whatever_the_critic(batches, critic):
    q_taken, _, q_joint, _, _, actions = map(np.asarray, batches(critic, 4))
    c = q_joint - q_taken
    for i in range(N):
        for b in range(A):
            picked = c[actions[:, i] == b, i]
            assert abs(picked.mean()) < 4 * picked.std() / np.sqrt(picked.size) + 1e-6, (critic, i, b)


@pytest.mark.parametrize("critic", ["exact", "wrong"])
@pytest.mark.parametrize("advantage", ["td", "perla_cv1"])
def test_policy_gradient_is_unbiased_whatever_the_critic(batches, critic, advantage):
    grads = gradients(batches(critic, 4), advantage)
    se = grads.std(axis=0) / np.sqrt(REPS)
    assert np.all(np.abs(grads.mean(axis=0) - exact_gradient()) < 4 * se + 1e-6)


def _variance(grads: np.ndarray) -> float:
    """Trace of the covariance of the gradient estimates over replicates."""
    return float(grads.reshape(REPS, -1).var(axis=0).sum())


def test_variance_falls_with_k_and_below_td_with_a_good_critic(batches):
    td = _variance(gradients(batches("exact", 16), "td"))
    cv = {k: _variance(gradients(batches("exact", k), "perla_cv1")) for k in (1, 16)}
    # Measured 2026-11-26 (20,000 replicates, so each trace carries about 1-2% sampling error): td 3.31;
    # perla_cv1 2.72 at K=1 and 2.07 at K=16. What remains is the reward noise and the own action's share.
    assert cv[16] < 0.85 * cv[1] and cv[16] < 0.75 * td, (td, cv)


@pytest.mark.parametrize("critic, low, high", [("exact", 0.7, 1.0), ("noise", 0.0, 0.2)])
def test_auto_beta_trusts_a_good_critic_and_ignores_a_useless_one(batches, critic, low, high):
    batch = batches(critic, 16)
    c = np.asarray(batch[2] - batch[0])
    diff = advantages(batch, "td") - advantages(batch, "perla_cv")  # = beta * c, one beta for the batch
    beta = float((diff * c).sum() / (c * c).sum())
    assert low <= beta <= high, beta
    np.testing.assert_allclose(diff, beta * c, atol=1e-4)


def test_auto_beta_never_does_worse_than_td_when_beta_one_does(batches):
    """With a critic whose errors in the others' actions are large, beta = 1 adds those errors to every
    advantage; auto keeps the variance at or below td's (measured 2026-11-26, K=16: td 3.80, beta 1 10.52,
    auto 3.64 with beta 0.14)."""
    batch = batches("wrong", 16)
    td, one, auto = (_variance(gradients(batch, name)) for name in ("td", "perla_cv1", "perla_cv"))
    assert one > 2 * td and auto <= 1.01 * td, (td, one, auto)


def others_covariance(first: np.ndarray, second: np.ndarray) -> float:
    """Mean over agents i of E[g_first g_second], g(a) = T(a) - E_{a_-i} T(a_i, a_-i): the covariance of the parts of
    two tables over joint actions that the others' actions cause, by enumeration (first = second = PAYOFF: the
    reward variance sigma^2 the others cause)."""
    weights = np.einsum("a,b,c->abc", *PROBS)
    total = 0.0
    for i in range(N):
        parts = [table - (weights * table).sum(axis=tuple(j for j in range(N) if j != i), keepdims=True)
                 / weights.sum(axis=tuple(j for j in range(N) if j != i), keepdims=True) for table in (first, second)]
        total += float(np.sum(weights * parts[0] * parts[1]))
    return total / N


def _others_share(batch, v_exact: float) -> float:
    q_taken, _, q_joint, reward, _, _ = batch
    ends = jnp.ones((1, q_taken.shape[0]), bool)
    v_now = jnp.full_like(q_taken, v_exact)[None]  # the exact V: only the marginal's K-sample noise remains
    values = MarginalValues(q_taken=q_taken[None], v_now=v_now, v_final=jnp.zeros_like(v_now), ended=ends,
                            q_joint=q_joint[None])
    td = TDLambda(rewards=jnp.broadcast_to(reward[:, None], q_taken.shape)[None], terminated=ends, ended=ends,
                  gamma=0.99, lam=0.95)
    return float(others_share(values, td))


@pytest.mark.parametrize("critic, k", [("exact", 1), ("exact", 16), ("wrong", 16), ("noise", 16)])
def test_others_share_matches_the_closed_form(batches, critic, k):
    """With delta = r - V and c = g_Q - mean_k g_Q(a_i, a_-i^(k)) (g as in ``others_covariance``): Cov(delta, c) =
    E[g_R g_Q], Var(c) = (1 + 1/K) E[g_Q^2], so the share is E[g_R g_Q]^2 / ((1 + 1/K) E[g_Q^2] Var(delta)), with
    Var(delta) = Var R + noise^2. The exact critic gives sigma^2 / ((1 + 1/K) Var(delta)); a critic unrelated to the
    game gives only the chance overlap of two random tables. Measured 2026-11-26 (closed form in brackets):
    exact K=1 0.196 (0.191), exact K=16 0.365 (0.360), wrong 0.038 (0.037), unrelated 0.013 (0.017)."""
    weights = np.einsum("a,b,c->abc", *PROBS)
    v = float(np.sum(weights * PAYOFF))
    var_delta = float(np.sum(weights * (PAYOFF - v) ** 2)) + NOISE**2
    table = CRITICS[critic]
    expected = others_covariance(PAYOFF, table) ** 2 / ((1 + 1 / k) * others_covariance(table, table) * var_delta)
    share = _others_share(batches(critic, k), v)
    assert abs(share - expected) < 0.1 * expected + 0.005, (share, expected)  # 20,000 replicates


CREDIT_ACTIONS, CREDIT_CONTEXTS, CREDIT_EPISODES = 3, 4, 20_000


def credit_q(context: jax.Array, joint: jax.Array) -> jax.Array:
    """The credit game's exact critic (``perla_jax/envs/credit.py``): Q(s, a) = mean_j [a_j == c_j mod A]."""
    return jnp.mean((joint == context % CREDIT_ACTIONS).astype(jnp.float32))


def credit_episode(key, logits: jax.Array, k: int, noise: float):
    """One one-step episode as the trainer sees it, every output ``[N]``: (q_taken, v_now, q_joint, reward).
    Q^_i over every own action and V^_i = sum_b pi_i(b) Q^_i(s, b) average the same K samples, as in the critics."""
    n = logits.shape[0]
    policy = distrax.Categorical(logits=logits)  # context-independent: the same policy in every context
    k_context, k_act, k_samples, k_noise = jax.random.split(key, 4)
    context = jax.random.randint(k_context, (n,), 0, CREDIT_CONTEXTS)
    action = policy.sample(seed=k_act)
    samples = sample_joint_actions(k_samples, policy, k)  # [K, N]
    q_fn = lambda i, joint: credit_q(context, joint)
    own = jnp.arange(CREDIT_ACTIONS)
    q_hat = jax.vmap(lambda b: marginalise(q_fn, jnp.full((n,), b), samples), out_axes=-1)(own)  # [N, A]
    q_joint = credit_q(context, action)
    reward = q_joint + noise * jax.random.normal(k_noise)
    return take_action(q_hat, action), expected_value(q_hat, policy.probs), jnp.full((n,), q_joint), reward


def credit_values(logits: jax.Array, k: int, noise: float) -> tuple[MarginalValues, TDLambda]:
    """CREDIT_EPISODES one-step episodes as one rollout ``[T=1, E, N]``; every step terminates, so V^(s') is unused."""
    keys = jax.random.split(jax.random.PRNGKey(k), CREDIT_EPISODES)
    q_taken, v_now, q_joint, reward = jax.lax.map(lambda key: credit_episode(key, logits, k, noise), keys,
                                                  batch_size=1000)  # chunks bound the [K, N, N] per-sample memory
    ends = jnp.ones((1, CREDIT_EPISODES), bool)
    values = MarginalValues(q_taken=q_taken[None], v_now=v_now[None], v_final=jnp.zeros_like(v_now)[None],
                            ended=ends, q_joint=q_joint[None])
    td = TDLambda(rewards=jnp.broadcast_to(reward[:, None], q_taken.shape)[None], terminated=ends, ended=ends,
                  gamma=0.99, lam=0.95)
    return values, td


@pytest.mark.parametrize("n, k, noise", [(2, 1, 0.0), (2, 16, 0.0), (8, 1, 0.0), (8, 16, 0.0), (32, 1, 0.0),
                                         (32, 16, 0.0), (8, 4, 0.1)])
def test_others_share_of_the_exact_credit_critic_matches_credit_others_share(n, k, noise):
    """The credit game's exact Q, K joint samples from given context-independent categorical policies (random
    logits per agent, so p_j = pi_j(c_j mod A) varies with agent and context), through ``others_share`` as the
    trainer calls it. v is p(1-p) averaged over agents and uniform contexts. Tolerance: for n pairs the squared
    correlation's standard error is about 2 rho (1 - rho^2) / sqrt(n) (normal theory); counting episodes, not
    agent-steps, as the n = 20,000 pairs is conservative (measured over 5 batches, 2026-12-03: at most 0.0032 at
    N = 2, K = 16, where this gives 0.0049). Four of those."""
    logits = jax.random.normal(jax.random.PRNGKey(100 + n), (n, CREDIT_ACTIONS))
    values, td = credit_values(logits, k, noise)
    p = np.asarray(jax.nn.softmax(logits))[:, np.arange(CREDIT_CONTEXTS) % CREDIT_ACTIONS]  # [N, C]
    expected = credit_others_share(n, k, success_probability(float(np.mean(p * (1 - p)))), noise)
    rho = np.sqrt(expected)
    tolerance = 4 * 2 * rho * (1 - rho**2) / np.sqrt(CREDIT_EPISODES)
    share = float(others_share(values, td))
    assert abs(share - expected) < tolerance, (share, expected, tolerance)


def success_probability(v: float) -> float:
    """The p <= 1/2 with p (1 - p) = v: the closed form takes every agent's success probability, and with reward
    noise the share depends on v alone."""
    return (1.0 - np.sqrt(1.0 - 4.0 * v)) / 2.0


def test_credit_others_share_closed_form():
    assert credit_others_share(1, 4, 0.3) == 0.0  # no others
    # Noise of scale sigma adds N^2 sigma^2 to the denominator: 2 (1 + 1/2) 0.2 / (0.6 + 0.2 + 9 0.01) at v = 0.2
    assert credit_others_share(3, 2, success_probability(0.2), 0.1) == pytest.approx(0.6 / 0.89)
