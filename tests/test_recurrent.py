"""Recurrent (GRU) actor and critic: hidden-state resets, replaying rollouts as sequence minibatches, the
critic's final-state inputs, and a memory task that only a recurrent policy can solve."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy_memory import make_cue_env

from perla_jax import Config, make_trainer
from perla_jax.agents import Agents
from perla_jax.critics.bootstrap import BootstrapSteps
from perla_jax.envs.registry import make_env
from perla_jax.evaluation import make_evaluator
from perla_jax.rollout import rollout

TINY = dict(env="MPE_simple_spread_v3", env_kwargs={"max_steps": 4}, network="rnn", num_envs=4, num_steps=12,
            total_timesteps=96, num_minibatches=2, update_epochs=1, k=3, actor_hidden=(8, 8), critic_hidden=(8, 8))


@pytest.fixture(scope="module")
def rnn_rollouts():
    """Two consecutive rollouts of a recurrent perla_mappo (episodes of 5 steps end inside them)."""
    trainer = make_trainer(Config(**TINY, algo="perla_mappo"))
    agents = trainer.agents

    @jax.jit
    def program(key):
        state = trainer.init(key)
        params = state.actor.params
        k1, k2 = jax.random.split(key)
        env_state, obs, traj1, hidden, first = rollout(trainer.env, agents, params, state.env_state, state.obs, k1, 12)
        _, _, traj2, _, _ = rollout(trainer.env, agents, params, env_state, obs, k2, 12, hidden, first)
        return state, traj1, traj2, hidden

    return trainer, *program(jax.random.PRNGKey(0))


def test_network_defaults_and_refusals():
    assert Config(env="smax", map_name="3m").network == "rnn"
    assert Config(env="mpe").network == "ff"
    with pytest.raises(ValueError, match=r"network='lstm' is invalid: allowed are ff, rnn"):
        Config(network="lstm")
    with pytest.raises(ValueError, match=r"num_minibatches=3 does not divide num_envs=4"):
        Config(network="rnn", num_envs=4, num_steps=3, num_minibatches=3)
    with pytest.raises(ValueError, match=r"critic_action_layer='first' is invalid with network='rnn'"):
        Config(network="rnn", critic_action_layer="first", critic_arch="mlp")
    with pytest.raises(ValueError, match=r"critic_action_layer='first' does nothing"):
        Config(network="rnn", critic_action_layer="first", critic_arch="factored")  # the factored critic has no such layer
    with pytest.raises(ValueError, match=r"critic_hidden=\(64,\) is invalid with network='rnn'"):
        Config(network="rnn", critic_hidden=(64,))
    Config(network="rnn", algo="mappo", critic_hidden=(64,))  # a V-critic head may be linear
    with pytest.raises(ValueError, match=r"network='rnn' is not supported for continuous-action env='ant_4x2'"):
        Config(env="ant_4x2", network="rnn")


def test_hidden_state_resets_at_episode_start():
    cfg = Config(**TINY)
    agents = Agents.build(cfg, make_env(cfg.env, cfg.env_kwargs))
    params = agents.init_actor(jax.random.PRNGKey(0))
    obs = jax.random.normal(jax.random.PRNGKey(1), (6, 2, agents.num_agents, agents.obs_dim))  # [T, E, N, O]
    first = jnp.zeros((6, 2), bool).at[0].set(True).at[3, 0].set(True)  # env 0 starts a new episode at t=3
    h0 = agents.initial_actor_carry((2,))
    logits = agents.actor_sequence(params, h0, obs, first).logits
    fresh = agents.actor_sequence(params, h0, obs[3:], jnp.zeros((3, 2), bool).at[0].set(True)).logits
    np.testing.assert_allclose(logits[3:, 0], fresh[:, 0], rtol=1e-6, atol=1e-6)
    # Env 1 carries its memory across t=3, so its outputs differ from a fresh start.
    assert np.abs(np.asarray(logits[3:, 1] - fresh[:, 1])).max() > 1e-4


def test_sequence_minibatches_replay_the_rollout(rnn_rollouts):
    """The loss recomputes the behaviour policy exactly from each minibatch's start hidden states, also for a
    rollout that continues the previous one's hidden states and episodes."""
    trainer, state, traj1, traj2, hidden = rnn_rollouts
    agents, params = trainer.agents, state.actor.params
    ended = np.asarray(traj1.terminated | traj1.truncated)
    assert ended.any() and np.asarray(traj1.first)[1:].any()
    np.testing.assert_array_equal(traj1.first[1:], ended[:-1])
    for traj, h0 in ((traj1, state.actor_carry), (traj2, hidden)):
        log_prob = agents.actor_sequence(params, h0, traj.obs, traj.first, traj.avail).log_prob(traj.action)
        np.testing.assert_allclose(log_prob, traj.log_prob, rtol=1e-5, atol=1e-5)
        envs = jnp.array([3, 1])  # a minibatch of whole sequences, shuffled
        sub = jax.tree.map(lambda x: x[:, envs], traj)
        log_prob = agents.actor_sequence(params, h0[envs], sub.obs, sub.first, sub.avail).log_prob(sub.action)
        np.testing.assert_allclose(log_prob, sub.log_prob, rtol=1e-5, atol=1e-5)
    # Starting the second rollout from zeros instead of the carried hidden state changes its policy.
    zeros = agents.actor_sequence(params, jnp.zeros_like(hidden), traj2.obs, traj2.first).log_prob(traj2.action)
    assert np.abs(np.asarray(zeros - traj2.log_prob)).max() > 1e-4


def test_critic_inputs_at_reached_states_continue_the_sequence(rnn_rollouts):
    trainer, state, traj, _, _ = rnn_rollouts
    t, e = traj.obs.shape[:2]
    every_step = BootstrapSteps(index=jnp.broadcast_to(jnp.arange(t)[:, None], (t, e)), overflow=jnp.array(False))
    head, now, final, last = trainer.critic.inputs.rollout(state.critic.params, state.critic_carry, traj, every_step)
    now, final = np.asarray(now), np.asarray(final)
    ended = np.asarray(traj.terminated | traj.truncated)
    # Where the episode went on, the state reached is the next step's state, with the same memory.
    went_on = ~ended[:-1]
    np.testing.assert_allclose(final[:-1][went_on], now[1:][went_on], rtol=1e-5, atol=1e-6)
    assert np.abs(final[:-1][ended[:-1]] - now[1:][ended[:-1]]).max() > 1e-4  # after a reset they differ
    np.testing.assert_allclose(last, now[-1], rtol=1e-6)
    assert head is state.critic.params["head"]


@pytest.mark.parametrize("network, low, high", [("rnn", 0.9, 1.0), ("ff", 0.0, 0.65)])
def test_only_a_recurrent_policy_solves_the_memory_task(network, low, high):
    """Cue game: memoryless policies earn at most 0.5 in expectation, remembering the cue earns 1. The greedy
    evaluation (which carries the recurrent actor's hidden state through each episode) agrees."""
    cfg = Config(algo="perla_mappo", network=network, num_envs=16, num_steps=8, num_minibatches=2, update_epochs=2,
                 total_timesteps=16 * 8 * 60, k=2, actor_hidden=(16, 16), critic_hidden=(16, 16), actor_lr=3e-3,
                 critic_lr=3e-3, ent_coef=0.0, anneal_lr=False)
    env = make_cue_env()
    trainer = make_trainer(cfg, env=env)

    def train(key):
        state, metrics = trainer.run_updates(trainer.init(key), cfg.num_updates)
        return state.actor.params, metrics["return"]

    params, returns = jax.jit(jax.vmap(train))(jax.random.split(jax.random.PRNGKey(0), 3))
    returns = np.asarray(returns)  # [seed, update]
    assert np.all(np.abs(returns[:, :3].mean(axis=1) - 0.5) < 0.15)  # both start at chance
    final = returns[:, -5:].mean(axis=1)
    assert np.all((final >= low) & (final <= high)), final
    greedy = make_evaluator(env, trainer.agents, 64, "greedy")(params, jax.random.PRNGKey(1))
    assert bool(greedy.ended.all()) and np.all(np.asarray(greedy.length) == 2.0)
    per_seed = np.asarray(greedy.team_return).mean(axis=1)
    if network == "rnn":
        np.testing.assert_array_equal(per_seed, 1.0)
    else:  # both agents see the same blank observation at step 2: right together or wrong together
        assert np.all(np.isin(np.asarray(greedy.team_return), [0.0, 1.0])) and np.all(np.abs(per_seed - 0.5) < 0.3)
