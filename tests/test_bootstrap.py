"""Critics evaluate the states a rollout's steps reached only where a TD target reads them (critics/bootstrap.py):
the steps chosen, their count bound, and every critic kind's estimates against evaluating every reached state."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy_continuous import ToyContinuous

from perla_jax import Config, make_trainer
from perla_jax.critics import CriticInputs
from perla_jax.critics.bootstrap import bootstrap_capacity, bootstrap_steps
from perla_jax.envs.mabrax import ContinuousMultiAgentEnv
from perla_jax.rollout import rollout


def test_capacity_counts_truncations_with_a_margin():
    assert bootstrap_capacity("observe", 26, 128) == 1  # the limit ends the task: only the last step bootstraps
    assert bootstrap_capacity("terminal", 26, 128) == 1
    assert bootstrap_capacity("bootstrap", 26, 128) == 11  # ceil(128 / 13) + 1
    assert bootstrap_capacity("bootstrap", 1, 16) == 16  # one-step episodes: every step
    assert bootstrap_capacity("bootstrap", None, 16) == 16  # no stated horizon: every step
    assert bootstrap_capacity("bootstrap", 1000, 128) == 2


def test_needed_steps_are_truncations_and_the_last_in_time_order():
    truncated = np.zeros((10, 3), bool)
    truncated[[2, 6], 1] = True
    truncated[9, 2] = True
    steps = bootstrap_steps(jnp.asarray(truncated), 3)
    np.testing.assert_array_equal(steps.index, [[9, 2, 9], [9, 6, 9], [9, 9, 9]])
    assert not bool(steps.overflow)
    x = jnp.arange(30.0).reshape(10, 3) + 1.0
    taken = steps.take(x)
    np.testing.assert_array_equal(taken, np.asarray(x)[np.asarray(steps.index), np.arange(3)])
    full = np.asarray(steps.put(taken, 10))
    needed = truncated | (np.arange(10) == 9)[:, None]
    np.testing.assert_array_equal(full[needed], np.asarray(x)[needed])
    assert (full[~needed] == 0).all()
    # Trailing axes (agents, actions) go along with the steps.
    y = jnp.broadcast_to(x[..., None, None], (10, 3, 2, 4))
    np.testing.assert_array_equal(steps.put(steps.take(y), 10)[..., 1, 3], full)


def test_more_truncations_than_capacity_poison_the_values():
    truncated = jnp.zeros((10, 2), bool).at[jnp.array([1, 3, 5]), 0].set(True)
    steps = bootstrap_steps(truncated, 3)  # 4 steps needed in env 0
    assert bool(steps.overflow)
    assert np.isnan(np.asarray(steps.put(steps.take(jnp.ones((10, 2))), 10))).all()


class EveryReachedState:
    """The reference: every step's reached state, with no index arithmetic."""

    def take(self, x):
        return x

    def put(self, values, num_steps):
        assert values.shape[0] == num_steps
        return values


@dataclasses.dataclass(frozen=True)
class EveryStepInputs(CriticInputs):
    def bootstrap_steps(self, traj):
        return EveryReachedState()


TINY = dict(num_envs=4, num_steps=20, k=3, actor_hidden=(8, 8), critic_hidden=(8, 8), num_minibatches=2,
            update_epochs=1)
CASES = {
    "mappo mpe": (dict(algo="mappo", env="mpe", time_limit="bootstrap"), None),
    "perla_mappo mpe": (dict(algo="perla_mappo", env="mpe", time_limit="bootstrap"), None),
    "perla_ippo rnn mlp mpe": (dict(algo="perla_ippo", env="mpe", time_limit="bootstrap", network="rnn",
                                    critic_arch="mlp", critic_target="marginal"), None),
    "perla_mappo box": (dict(algo="perla_mappo", own_action_samples=2), "toy"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_estimates_equal_those_from_every_reached_state(case):
    """Truncations every 5 steps (toy) or 26 (MPE, 20-step rollouts started mid-episode): the estimates with the
    needed steps only equal those of the same critic evaluating all T reached states."""
    fields, env_name = CASES[case]
    env = ContinuousMultiAgentEnv(name="toy", env=ToyContinuous(max_steps=5), time_limit="bootstrap") if env_name else None
    trainer = make_trainer(Config.applicable_of(dict(TINY, **fields)), env)
    every = dataclasses.replace(trainer.critic, inputs=EveryStepInputs(**vars(trainer.critic.inputs)))
    assert trainer.critic.inputs.bootstrap_capacity < TINY["num_steps"]

    @jax.jit
    def program(key):
        k_init, k_roll, k_est = jax.random.split(key, 3)
        state = trainer.init(k_init)
        # Start MPE episodes part-way, so that a truncation falls inside the rollout.
        env_state, obs, _, hidden, first = rollout(trainer.env, trainer.agents, state.actor.params, state.env_state,
                                                   state.obs, k_roll, 13)
        _, _, traj, _, _ = rollout(trainer.env, trainer.agents, state.actor.params, env_state, obs, k_est,
                                   trainer.cfg.num_steps, hidden, first)
        args = (state.actor.params, state.critic.params, traj, k_est)
        return traj, trainer.critic.estimate(*args), every.estimate(*args)

    traj, est, reference = program(jax.random.PRNGKey(3))
    assert bool(traj.truncated.any())  # the case exercises a truncated step
    for name in ("targets", "advantages", "old_predictions"):
        np.testing.assert_allclose(getattr(est, name), getattr(reference, name), rtol=1e-6, atol=1e-6, err_msg=name)
    assert np.isfinite(np.asarray(est.targets)).all()
