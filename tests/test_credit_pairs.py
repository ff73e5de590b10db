"""The pairs credit game (``--env credit_pairs``), both games' exact critics, and the closed-form others_share
of an exact critic (``credit_others_share``, ``pairs_others_share``) against the trainer's metric on samples."""

from __future__ import annotations

import itertools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perla_jax import make_env
from perla_jax.advantages import MarginalValues, TDLambda, others_share, take_action
from perla_jax.envs.credit import credit_others_share, pairs_others_share
from perla_jax.marginalisation import marginalise, sample_joint_actions

A = 4


def test_partners_see_their_pairs_context_and_score_only_together():
    env = make_env("credit_pairs", {"num_agents": 4, "num_contexts": 6, "num_actions": A})
    obs, state = env.reset(jax.random.PRNGKey(0))
    context = np.asarray(state.inner.context)
    np.testing.assert_array_equal(context[0::2], context[1::2])  # one context per pair
    np.testing.assert_array_equal(obs, np.eye(6)[context])
    right, wrong = context % A, (context + 1) % A
    # (agents right) -> reward: a pair counts only when both partners are right; one right agent is worth 0.
    cases = {(1, 1, 1, 1): 1.0, (1, 1, 0, 1): 0.5, (1, 0, 1, 0): 0.0, (0, 0, 1, 1): 0.5, (0, 0, 0, 0): 0.0}
    for mask, expected in cases.items():
        actions = jnp.asarray(np.where(np.array(mask, bool), right, wrong))
        _, tr = env.step(jax.random.PRNGKey(1), state, actions)
        np.testing.assert_allclose(tr.reward, expected)
        assert float(env.env.exact_q(state.inner.context, actions)) == pytest.approx(expected)
        assert bool(tr.terminated) and not bool(tr.truncated) and float(tr.episode_length) == 1.0
    assert env.state_dim == 4 * 6 and env.num_actions == A


@pytest.mark.parametrize("name, num_agents, random_team", [("credit", 4, 1 / A), ("credit_pairs", 4, 1 / A**2),
                                                           ("credit_pairs", 2, 1 / A**2)])
def test_enumerated_joint_actions_exact_q_is_the_reward_optimum_and_random_team(name, num_agents, random_team):
    """Every joint action of a drawn state: the env's reward equals exact_q, the best is 1.0 (at the targets),
    and the uniform mean, the expected reward of a uniformly random team, is 1/A (credit) or 1/A^2 (pairs)."""
    env = make_env(name, {"num_agents": num_agents, "num_actions": A})
    _, state = env.reset(jax.random.PRNGKey(3))
    joint = jnp.asarray(list(itertools.product(range(A), repeat=num_agents)))  # [A^N, N]
    rewards = jax.vmap(lambda a: env.step(jax.random.PRNGKey(0), state, a)[1].reward)(joint)  # [A^N, N]
    exact = jax.vmap(lambda a: env.env.exact_q(state.inner.context, a))(joint)
    np.testing.assert_allclose(rewards, np.broadcast_to(np.asarray(exact)[:, None], rewards.shape), atol=1e-7)
    assert float(exact.max()) == 1.0 and float(env.env.exact_q(state.inner.context, state.inner.context % A)) == 1.0
    assert float(exact.mean()) == pytest.approx(random_team)


def test_credit_exact_q_is_the_mean_of_hits_and_pairs_is_not_additive():
    context = jnp.array([0, 0, 1, 1])
    right, wrong = context % A, (context + 1) % A
    q = {name: make_env(name, {"num_agents": 4, "num_actions": A}).env.exact_q for name in ("credit", "credit_pairs")}
    one_wrong = right.at[0].set(wrong[0])
    both_wrong = one_wrong.at[1].set(wrong[1])
    assert float(q["credit"](context, one_wrong)) == pytest.approx(0.75)
    # Pairs: agent 0's action is worth 0.5 when its partner is right and 0 when it is wrong.
    assert float(q["credit_pairs"](context, right) - q["credit_pairs"](context, one_wrong)) == pytest.approx(0.5)
    assert float(q["credit_pairs"](context, right.at[1].set(wrong[1])) - q["credit_pairs"](context, both_wrong)) == 0.0


@pytest.mark.parametrize("kwargs, match", [
    ({"num_agents": 3}, r"num_agents=3 is invalid for env='credit_pairs': allowed is an even integer >= 2"),
    ({"num_agents": 0}, "num_agents=0.*even integer >= 2"), ({"num_agents": True}, "num_agents=True"),
    ({"num_actions": 1}, "num_actions=1"), ({"reward_noise": -1.0}, "reward_noise"),
    ({"agents": 4}, r"\['agents'\] are unknown for env='credit_pairs'.*num_agents"),
])
def test_bad_pairs_kwargs_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_env("credit_pairs", kwargs)


@pytest.mark.parametrize("fn, kwargs, match", [
    (pairs_others_share, dict(num_agents=3, k=1, p=0.5), "num_agents=3.*even"),
    (credit_others_share, dict(num_agents=0, k=1, p=0.5), "num_agents=0"),
    (credit_others_share, dict(num_agents=2, k=0, p=0.5), "k=0"),
    (pairs_others_share, dict(num_agents=2, k=1, p=1.0), "p=1.0"),
])
def test_closed_forms_refuse_arguments_outside_their_domain(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(**kwargs)


def test_closed_forms_known_values():
    # NOTES.md: ~0.88 at N=8 and ~0.97 at N=32 (K=16) for the additive game.
    assert credit_others_share(8, 16, 0.5) == pytest.approx(7 * 17 / 16 / (7 * 17 / 16 + 1))
    assert credit_others_share(32, 16, 0.3) == pytest.approx(0.9705, abs=1e-4)
    # One pair, K -> inf: delta = x_i x_j - p^2 ... the partner explains 1/(1+p) of it.
    assert pairs_others_share(2, 10**9, 0.3) == pytest.approx(1 / 1.3, rel=1e-6)
    # Reward noise only adds to Var(delta).
    assert pairs_others_share(8, 4, 0.5, reward_noise=0.1) < pairs_others_share(8, 4, 0.5)


def exact_marginal_values(env, key, num_envs: int, k: int, p: float) -> tuple[MarginalValues, jax.Array]:
    """One batch of the trainer's inputs with the exact critic: ``num_envs`` one-step episodes in which every
    agent picks its target with probability p (the rest uniform), K joint samples of the others per state.
    Returns the marginal values and the env's rewards, both ``[T=1, E, N]`` (every step terminates)."""
    k_reset, k_act, k_samples, k_step = jax.random.split(key, 4)
    _, states = jax.vmap(env.reset)(jax.random.split(k_reset, num_envs))
    context = states.inner.context  # [E, N]
    target = jax.nn.one_hot(context % A, A)
    probs = target * p + (1 - target) * (1 - p) / (A - 1)  # [E, N, A]
    policy = distrax.Categorical(probs=probs)
    taken = policy.sample(seed=k_act)  # [E, N]
    samples = jnp.swapaxes(sample_joint_actions(k_samples, policy, k), 0, 1)  # [E, K, N]

    def per_env(ctx, joint_samples):  # Q^_i(s, a) for every own action a: [N, A]
        q_fn = lambda i, joint: env.env.exact_q(ctx, joint)  # noqa: E731  (the same exact critic for every i)
        return jax.vmap(lambda a: marginalise(q_fn, jnp.full(ctx.shape, a), joint_samples), out_axes=1)(jnp.arange(A))

    q_hat = jax.lax.map(lambda xs: per_env(*xs), (context, samples), batch_size=64)  # [E, N, A]
    _, tr = jax.vmap(env.step)(jax.random.split(k_step, num_envs), states, taken)
    q_joint = jax.vmap(env.env.exact_q)(context, taken)  # [E]
    values = MarginalValues(q_taken=take_action(q_hat, taken)[None], v_now=jnp.sum(probs * q_hat, -1)[None],
                            v_final=jnp.zeros((1, *taken.shape)), ended=tr.terminated[None],
                            q_joint=jnp.broadcast_to(q_joint[:, None], taken.shape)[None])
    return values, tr.reward[None]


def one_step_share(values: MarginalValues, rewards: jax.Array) -> jax.Array:
    """The trainer's others_share of one-step episodes, ``rewards [1, E, N]``: every step terminated (gamma and
    lambda then play no part)."""
    ends = values.ended
    return others_share(values, TDLambda(rewards=rewards, terminated=ends, ended=ends, gamma=0.9, lam=0.7))


NUM_ENVS, CHUNKS = 4096, 16


def batch_share_and_se(values: MarginalValues, rewards: jax.Array) -> tuple[float, float]:
    """others_share over the whole batch, and its standard error from the spread over CHUNKS disjoint sub-batches
    of environments (agents of one environment are correlated, so environments are the independent unit):
    se = std(sub-batch shares) / sqrt(CHUNKS); the sub-batch spread shrinks as 1/sqrt(NUM_ENVS / CHUNKS)."""
    split = lambda x: x.reshape(x.shape[0], CHUNKS, -1, *x.shape[2:]).swapaxes(0, 1)  # noqa: E731
    chunked = jax.vmap(one_step_share)(jax.tree.map(split, values), split(rewards))  # [CHUNKS]
    return float(one_step_share(values, rewards)), float(np.std(np.asarray(chunked), ddof=1) / np.sqrt(CHUNKS))


@pytest.mark.parametrize("name, closed_form", [("credit_pairs", pairs_others_share), ("credit", credit_others_share)])
@pytest.mark.parametrize("num_agents", [2, 8, 32])
@pytest.mark.parametrize("k", [1, 16])
def test_closed_form_others_share_matches_the_trainers_metric(name, closed_form, num_agents, k):
    """The exact critic's others_share through the project's own marginalise / sample_joint_actions /
    others_share, at two success probabilities, within 4 standard errors of the NUM_ENVS-episode batch, plus
    1/NUM_ENVS for the O(1/batch) bias of a squared correlation estimated on a finite batch. Up to N = 8 the same
    batch rejects the additive game's formula on the pairs game: the test can tell the two apart."""
    env = make_env(name, {"num_agents": num_agents, "num_actions": A})
    run = jax.jit(lambda key, p: exact_marginal_values(env, key, NUM_ENVS, k, p))
    for p, seed in ((0.25, 0), (0.8, 1)):
        share, se = batch_share_and_se(*run(jax.random.PRNGKey(seed), p))
        expected = closed_form(num_agents, k, p)
        assert se < 0.02, (p, se)  # the batch resolves the share to a few percent at worst
        tolerance = 4 * se + 1 / NUM_ENVS
        assert abs(share - expected) < tolerance, (p, share, expected, se)
        if name == "credit_pairs" and num_agents <= 8:
            assert abs(share - credit_others_share(num_agents, k, p)) > tolerance, (p, share, se)
