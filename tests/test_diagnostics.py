"""The policy-gradient spread metrics (``pg_var``, ``pg_snr``) against numpy and against a closed form."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from perla_jax import Config, make_trainer
from perla_jax.diagnostics import gradient_spread, per_env_policy_gradients
from perla_jax.rollout import rollout


def test_gradient_spread_matches_numpy():
    rng = np.random.default_rng(0)
    grads = {"a": rng.normal(size=(7, 3, 2)), "b": rng.normal(loc=0.5, size=(7, 4))}
    flat = np.concatenate([grads["a"].reshape(7, -1), grads["b"]], axis=1)
    trace, snr = gradient_spread(jax.tree.map(jnp.asarray, grads))
    want = flat.var(axis=0, ddof=1).sum()
    np.testing.assert_allclose(trace, want, rtol=1e-5)
    np.testing.assert_allclose(snr, (flat.mean(axis=0) ** 2).sum() / (want / 7), rtol=1e-5)


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
