"""Your own environment through ``make_train(config, env=...)`` (``perla_jax/envs/custom.py``): README's example as
written, the interface checks, Box actions, the world state, and which episode ends are truncations."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxmarl.environments import spaces
from programs import ROOT
from toy_continuous import ToyContinuous

from perla_jax import Config, make_env, make_trainer
from perla_jax.envs.custom import CustomBoxEnv, CustomEnv, wrap_env


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- custom-env-example:start -->\n```python\n(.*?)```\n<!-- custom-env-example:end -->",
                      text, re.S)
    assert block, "README lost its custom-environment example"
    return block.group(1)


@pytest.fixture(scope="module")
def example():
    namespace = {}
    exec(compile(_readme_example(), "README.md (custom-env-example)", "exec"), namespace)  # runs as written
    return namespace


def test_readme_example_learns_the_coordination_game(example):
    """Uniform play earns 1/9; the trained pair must earn nearly the optimum 1."""
    ret = np.asarray(example["out"]["metrics"]["return"])
    assert ret.shape == (example["cfg"].num_updates,)
    assert ret[:2].mean() < 0.5 and ret[-5:].mean() > 0.95, ret


def test_the_example_env_steps_as_jaxmarl_would(example):
    env = wrap_env(example["Meet"]())
    assert isinstance(env, CustomEnv) and env.num_agents == 2 and env.obs_dim == 3 and env.num_actions == 3
    assert env.state_dim == 6  # no get_world_state: the concatenated observations
    obs, state = env.reset(jax.random.PRNGKey(1))
    target = int(state.inner)
    _, tr = env.step(jax.random.PRNGKey(2), state, jnp.array([target, target]))
    np.testing.assert_array_equal(tr.reward, [1.0, 1.0])
    assert (bool(tr.terminated), bool(tr.truncated)) == (True, False)  # no step count: the end is a termination
    _, tr = env.step(jax.random.PRNGKey(2), state, jnp.array([target, (target + 1) % 3]))
    np.testing.assert_array_equal(tr.reward, [0.0, 0.0])


class _Partial:
    agents = ["a"]

    def observation_space(self, agent):
        return spaces.Box(0.0, 1.0, (2,))

    def reset(self, key):
        return {"a": jnp.zeros(2)}, jnp.zeros(())


def test_a_missing_part_of_the_interface_is_named():
    with pytest.raises(ValueError, match=r"env _Partial lacks action_space, step_env \(or step\)"):
        make_trainer(Config(env="custom"), _Partial())


class _Mixed(_Partial):
    agents = ["a", "b"]

    def action_space(self, agent):
        return spaces.Discrete(2) if agent == "a" else spaces.Box(-1.0, 1.0, (1,))

    def step_env(self, key, state, actions):
        raise AssertionError("never stepped")


def test_mixed_action_kinds_are_refused():
    with pytest.raises(ValueError, match=r"action spaces \['Box', 'Discrete'\]: allowed are"):
        wrap_env(_Mixed())


def test_a_name_cannot_build_a_custom_env():
    with pytest.raises(ValueError, match="pass it as make_train"):
        make_env("custom")


class _WithWorldState(_Partial):
    def action_space(self, agent):
        return spaces.Discrete(2)

    def step_env(self, key, state, actions):
        return {"a": jnp.ones(2)}, state + 1, {"a": jnp.float32(1)}, {"a": False, "__all__": jnp.bool_(False)}, {}

    def get_world_state(self, state):
        return jnp.full((7,), state)


def test_the_world_state_is_used_where_the_env_has_one():
    env = wrap_env(_WithWorldState())
    assert env.state_dim == 7
    _, state = env.reset(jax.random.PRNGKey(0))
    _, tr = env.step(jax.random.PRNGKey(1), state, jnp.array([0]))
    np.testing.assert_array_equal(tr.final_state, np.full(7, 1.0))


def test_box_actions_truncate_by_brax_convention_and_train():
    """ToyContinuous (Box, heterogeneous) reports its time limit as info["truncation"]: the 5th of 5 steps is a
    truncation; perla_mappo trains on it; a recurrent policy (discrete only) is refused by name."""
    env = wrap_env(ToyContinuous(max_steps=5))
    assert isinstance(env, CustomBoxEnv) and env.action_dim == 2
    _, state = env.reset(jax.random.PRNGKey(0))
    for t in range(5):
        state, tr = env.step(jax.random.PRNGKey(t), state, jnp.zeros((2, 2)))
        assert (bool(tr.terminated), bool(tr.truncated)) == (False, t == 4)
    cfg = Config(env="custom", algo="perla_mappo", num_envs=2, num_steps=8, total_timesteps=32, k=2,
                 own_action_samples=2, num_minibatches=2, update_epochs=1, actor_hidden=(8,), critic_hidden=(8,))
    trainer = make_trainer(cfg, ToyContinuous(max_steps=5))
    _, metrics = jax.jit(lambda key: trainer.run_updates(trainer.init(key), 2))(jax.random.PRNGKey(0))
    assert all(np.isfinite(np.asarray(metrics[name])).all() for name in ("actor_loss", "critic_loss"))
    with pytest.raises(ValueError, match=r"network='rnn' is not supported for env 'ToyContinuous' \(Box actions\)"):
        make_trainer(cfg.replace(network="rnn", critic_hidden=(8, 8)), ToyContinuous())
