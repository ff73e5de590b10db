"""Value normalisation (perla_jax/value_norm.py): the running statistics, every critic's estimates under them,
and the trainer regressing standardised targets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy_continuous import ToyContinuous

from perla_jax import Config, make_trainer
from perla_jax.envs.mabrax import ContinuousMultiAgentEnv
from perla_jax.rollout import rollout
from perla_jax.train import _in_critic_units
from perla_jax.types import CriticEstimates
from perla_jax.value_norm import BETA, ValueNorm, initial_value_norm


def test_statistics_are_the_debiased_exponential_averages():
    norm = initial_value_norm()
    x = jnp.linspace(-3.0, 5.0, 7)
    np.testing.assert_allclose(norm.denormalise(x), x)  # identity before any update
    batches = [np.random.default_rng(i).normal(2.0 * i, 1.0 + i, size=(4, 3)) for i in range(3)]
    for b in batches:
        norm = norm.update(jnp.asarray(b, jnp.float32))
    weights = np.array([BETA**2, BETA, 1.0]) * (1 - BETA)
    mean = sum(w * b.mean() for w, b in zip(weights, batches)) / weights.sum()
    second = sum(w * (b**2).mean() for w, b in zip(weights, batches)) / weights.sum()
    np.testing.assert_allclose(norm.location, mean, rtol=1e-4)
    np.testing.assert_allclose(norm.scale, np.sqrt(second - mean**2), rtol=1e-4)
    np.testing.assert_allclose(norm.denormalise(norm.normalise(x)), x, rtol=1e-5, atol=1e-5)


def test_first_update_regresses_standardised_targets():
    targets = jnp.asarray(np.random.default_rng(0).normal(3.0, 0.02, size=(8, 4, 2)), jnp.float32)
    est = CriticEstimates(advantages=targets, targets=targets, old_predictions=targets + 0.01, joint_samples=None,
                          sample_variance=targets, others_share=jnp.float32(0.0))
    norm, standardised, old = _in_critic_units(initial_value_norm(), est)
    np.testing.assert_allclose(standardised.mean(), 0.0, atol=1e-3)
    np.testing.assert_allclose(standardised.std(), 1.0, rtol=1e-3)
    np.testing.assert_allclose(old - standardised, 0.01 / norm.scale, rtol=1e-3)
    assert _in_critic_units(None, est)[1] is targets  # off: the targets as they are


TINY = dict(num_envs=4, num_steps=12, k=3, actor_hidden=(8, 8), critic_hidden=(8, 8), num_minibatches=2,
            update_epochs=1, time_limit="bootstrap")
CASES = {
    "mappo": dict(algo="mappo"),
    "perla_mappo factored": dict(algo="perla_mappo"),
    "perla_ippo mlp": dict(algo="perla_ippo", critic_arch="mlp"),
    "perla_mappo box": dict(algo="perla_mappo", env="toy", own_action_samples=2),
}


def _output_layer(params: dict) -> tuple[tuple[str, ...], dict]:
    """The path to a (feed-forward) critic's output layer: ``out``, or an MLP's last Dense."""
    if "out" in params["params"]:
        return ("params", "out"), params["params"]["out"]
    mlp = params["params"]["MLP_0"]
    last = max(mlp, key=lambda name: int(name.split("_")[1]))
    return ("params", "MLP_0", last), mlp[last]


def _with_output(params: dict, path: tuple[str, ...], layer: dict) -> dict:
    params = dict(params)
    node = params
    for name in path[:-1]:
        node[name] = dict(node[name])
        node = node[name]
    node[path[-1]] = layer
    return params


@pytest.mark.parametrize("case", sorted(CASES))
def test_estimates_under_statistics_equal_a_critic_with_the_affine_output(case):
    """De-standardising the outputs with (location m, scale s) is the critic whose output layer is s * out + m:
    the targets, advantages and rollout predictions must agree, and the K-sample variance must be s^2 times."""
    fields = dict(CASES[case])
    env = None
    if fields.pop("env", None) == "toy":
        env = ContinuousMultiAgentEnv(name="toy", env=ToyContinuous(max_steps=5), time_limit="bootstrap")
    trainer = make_trainer(Config.applicable_of(dict(TINY, **fields)), env)
    m, s = 1.7, 0.3
    norm = ValueNorm(mean=jnp.float32(m), variance=jnp.float32(s**2), weight=jnp.float32(1 - BETA))

    @jax.jit
    def program(key):
        k_init, k_roll, k_est, k_out = jax.random.split(key, 4)
        state = trainer.init(k_init)
        path, layer = _output_layer(state.critic.params)
        # a nonzero output layer, so the check is not against outputs that are all zero
        layer = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(k_out, p.shape), layer)
        params = _with_output(state.critic.params, path, layer)
        affine = _with_output(params, path, {"kernel": layer["kernel"] * s, "bias": layer["bias"] * s + m})
        _, _, traj, _, _ = rollout(trainer.env, trainer.agents, state.actor.params, state.env_state, state.obs,
                                   k_roll, trainer.cfg.num_steps)
        est = trainer.critic.estimate(state.actor.params, params, traj, k_est, value_norm=norm)
        reference = trainer.critic.estimate(state.actor.params, affine, traj, k_est)
        return est, reference

    np.testing.assert_allclose(float(norm.scale), s, rtol=1e-3)
    est, reference = program(jax.random.PRNGKey(0))
    for name in ("targets", "advantages", "old_predictions"):
        np.testing.assert_allclose(getattr(est, name), getattr(reference, name), rtol=2e-3, atol=2e-3, err_msg=name)
    np.testing.assert_allclose(est.sample_variance, reference.sample_variance, rtol=5e-3, atol=1e-6)
    assert np.abs(np.asarray(est.targets)).max() > 0.5  # the values carry the location m


def test_training_carries_the_statistics_of_every_rollout():
    cfg = Config(algo="perla_mappo", env="credit", env_kwargs={"num_agents": 4}, num_envs=4, num_steps=8,
                 num_minibatches=2, update_epochs=1, k=2, actor_hidden=(8,), critic_hidden=(8,), value_norm=True)
    trainer = make_trainer(cfg)
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    assert float(state.value_norm.weight) == 0.0
    state, metrics = jax.jit(lambda s: trainer.run_updates(s, 3))(state)
    np.testing.assert_allclose(state.value_norm.weight, (1 - BETA**3), rtol=1e-3)
    # credit rewards are team success rates in [0, 1], and one-step episodes make every target a reward
    assert 0.0 < float(state.value_norm.location) < 1.0 and 0.0 < float(state.value_norm.scale) < 0.5
    assert np.isfinite(np.asarray(metrics["critic_loss"])).all()
