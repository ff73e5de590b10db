"""Continuous-action environments and training: the padded Box wrapper on a toy env, the algorithms through
the one train_step, and MABrax's episode ends."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy_continuous import ToyContinuous

from perla_jax import Config, make_env
from perla_jax.agents import Agents
from perla_jax.envs.mabrax import ContinuousMultiAgentEnv
from perla_jax.envs.registry import resolve_env_name
from perla_jax.evaluation import make_evaluator
from perla_jax.rollout import rollout
from perla_jax.train import METRICS, make_trainer

TINY = dict(
    num_envs=2, num_steps=8, total_timesteps=32, k=2, own_action_samples=2, actor_hidden=(8, 8),
    critic_hidden=(8, 8), num_minibatches=2, update_epochs=1,
)


@pytest.fixture(scope="module")
def toy():
    return ContinuousMultiAgentEnv(name="toy", env=ToyContinuous(max_steps=5))


def test_wrapper_pads_observations_and_sends_only_real_clipped_dims(toy):
    assert (toy.obs_dim, toy.action_dim) == (3, 2)
    np.testing.assert_array_equal(toy.action_mask, [[True, False], [True, True]])
    obs, state = toy.reset(jax.random.PRNGKey(0))
    assert obs.shape == (2, 3) and float(obs[0, 2]) == 0.0  # agent a's padded observation slot
    actions = jnp.array([[3.0, 9.0], [0.7, -0.1]])  # a: out of bounds, plus a padded dim; b: one dim clipped
    state, tr = jax.jit(toy.step)(jax.random.PRNGKey(1), state, actions)
    np.testing.assert_allclose(state.inner.last_a, [1.0])
    np.testing.assert_allclose(state.inner.last_b, [0.5, -0.1])
    random = toy.random_actions(jax.random.PRNGKey(2))
    assert random.shape == (2, 2) and float(random[0, 1]) == 0.0


def test_termination_and_truncation_kept_apart(toy):
    step = jax.jit(toy.step)
    _, state = toy.reset(jax.random.PRNGKey(0))
    # Agent a pushes by +1 per step from pos in [-0.5, 0.5]: |pos| > 1.5 at step 2 or 3, a termination.
    push = jnp.array([[1.0, 0.0], [0.0, 0.0]])
    flags = []
    for t in range(3):
        state, tr = step(jax.random.PRNGKey(t), state, push)
        flags.append((bool(tr.terminated), bool(tr.truncated)))
        if flags[-1][0]:
            assert float(tr.final_obs[0, 0]) > 1.5 and float(tr.episode_length) == t + 1
            assert abs(float(tr.obs[0, 0])) <= 0.5  # reset observation, final one kept apart
            break
    assert flags[-1] == (True, False)
    # Standing still never terminates: the 5-step limit is a truncation.
    _, state = toy.reset(jax.random.PRNGKey(0))
    for t in range(5):
        state, tr = step(jax.random.PRNGKey(t), state, jnp.zeros((2, 2)))
        assert (bool(tr.terminated), bool(tr.truncated)) == (False, t == 4)


@pytest.mark.parametrize("algo", ["perla_mappo", "mappo"])
def test_algorithms_train_on_continuous_actions(toy, algo):
    cfg = Config.applicable_of(dict(TINY, algo=algo))
    trainer = make_trainer(cfg, toy)
    run = jax.jit(lambda key: trainer.run_updates(trainer.init(key), 2))
    state, metrics = run(jax.random.PRNGKey(0))
    assert set(metrics) == set(METRICS)
    for name, value in metrics.items():
        assert value.shape == (2,), name
        # No wins in this env: the win rate is NaN, like MPE's.
        undefined = name == "win_rate" or (name == "others_share" and algo == "mappo")  # no wins; no Q of a_-i
        assert np.all(np.isnan(value)) if undefined else np.all(np.isfinite(value)), name
    # Entropy of the initial unit-variance Gaussians, real dims only: 1 (agent a) and 2 (agent b), mean 1.5.
    np.testing.assert_allclose(metrics["entropy"][0], 1.5 * 0.5 * np.log(2 * np.pi * np.e), rtol=1e-3)
    assert state.obs.shape == (2, 2, 3)
    if algo.startswith("perla"):  # the others' part starts at zero, so the spread over K shows once it has trained
        assert float(metrics["critic_sample_var"][0]) == 0.0 and float(metrics["critic_sample_var"][1]) > 0.0
    again = run(jax.random.PRNGKey(0))[1]
    np.testing.assert_array_equal(metrics["critic_loss"], again["critic_loss"])  # deterministic


def test_mabrax_names_resolve_without_brax():
    assert resolve_env_name("mabrax") == "ant_4x2"
    for name in ("ant_4x2", "halfcheetah_6x1", "hopper_3x1", "walker2d_2x3", "humanoid_9|8"):
        assert resolve_env_name(name) == name
    with pytest.raises(ValueError, match="ant_8x1"):
        resolve_env_name("ant_8x1")


needs_brax = pytest.mark.skipif(importlib.util.find_spec("brax") is None, reason='needs pip install -e ".[mabrax]"')


@needs_brax
def test_mabrax_heterogeneous_spaces_are_padded():
    env = make_env("halfcheetah_6x1")
    assert env.obs_dims == (9, 9, 8, 9, 9, 8) and env.obs_dim == 9
    assert env.action_dims == (1,) * 6 and env.action_mask.all()
    with pytest.raises(ValueError, match="auto_reset=True"):
        make_env("ant_4x2", {"auto_reset": True})


@needs_brax
def test_mabrax_time_limit_is_a_truncation():
    env = make_env("ant_4x2", {"episode_length": 3})
    assert (env.num_agents, env.obs_dim, env.action_dim) == (4, 18, 2)
    obs, state = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    for t in range(3):
        state, tr = step(jax.random.PRNGKey(t), state, jnp.zeros((4, 2)))
        assert (bool(tr.terminated), bool(tr.truncated)) == (False, t == 2)
        assert np.all(np.isfinite(tr.reward)) and tr.reward.shape == (4,)
    assert float(tr.episode_length) == 3.0 and float(state.inner.info["steps"]) == 0.0  # reset after the end
    assert env.horizon == 3  # evaluation runs brax's episode_length steps


def test_greedy_evaluation_of_a_zero_policy_matches_the_closed_form(toy):
    """Zero actor weights: the greedy actions are 0, so pos stays at its reset value p ~ U[-0.5, 0.5] and each of
    the 5 steps pays -p^2 - 2 * 0.2^2: E[return] = 5 (-1/12 - 0.08), with per-episode sd 5 sqrt(1/80 - 1/144)."""
    cfg = Config.applicable_of(dict(TINY, env="mpe", algo="mappo"))
    agents = Agents.build(cfg, toy)
    params = jax.tree.map(jnp.zeros_like, agents.init_actor(jax.random.PRNGKey(0)))
    episodes = make_evaluator(toy, agents, 400, "greedy")(jax.tree.map(lambda x: x[None], params), jax.random.PRNGKey(3))
    np.testing.assert_array_equal(episodes.length, 5.0)
    assert bool(episodes.ended.all()) and episodes.won is None
    sd = 5 * np.sqrt(1 / 80 - 1 / 144) / np.sqrt(400)
    assert abs(float(episodes.team_return.mean()) - 5 * (-1 / 12 - 0.08)) < 4 * sd


@pytest.mark.parametrize("arch, others_weights", [("mlp", "action_kernel"), ("factored", "phi_out")])
def test_estimates_match_the_critic_loss_prediction_and_vanish_without_action_input(toy, arch, others_weights):
    """old_predictions (used for value clipping) is the prediction the critic loss regresses, at the same
    parameters; with the weights that carry the others' actions zeroed Q(s, a_i, a_-i) = Q^ exactly, so the control
    variate c is 0 and perla_cv1's advantage is td's."""
    # The marginal target: its prediction goes through the stored K samples, the part this test checks. The
    # factored critic's others' part starts at zero by default; a nonzero start makes the first check not vacuous.
    cfg = Config(algo="perla_mappo", advantage="perla_cv1", critic_target="marginal", critic_arch=arch,
                 **({"critic_others_scale": 1.0} if arch == "factored" else {}), **TINY)
    td_critic = make_trainer(cfg.replace(advantage="td"), toy).critic
    trainer = make_trainer(cfg, toy)
    agents, critic = trainer.agents, trainer.critic

    @jax.jit
    def run(key, action_scale):
        state = trainer.init(key)
        params = jax.tree_util.tree_map_with_path(
            lambda p, x: x * action_scale if others_weights in jax.tree_util.keystr(p) else x, state.critic.params
        )
        _, _, traj, *_ = rollout(toy, agents, state.actor.params, state.env_state, state.obs, key, cfg.num_steps)
        est = critic.estimate(state.actor.params, params, traj, key)
        td_est = td_critic.estimate(state.actor.params, params, traj, key)
        return traj, est, critic.q_taken(params, traj.obs, traj.state, est.joint_samples, traj.action), td_est

    traj, est, pred, td_est = run(jax.random.PRNGKey(0), 1.0)
    assert traj.action.shape == (8, 2, 2, 2) and est.joint_samples.shape == (8, 2, 2, 2, 2)
    np.testing.assert_allclose(est.old_predictions, pred, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(traj.action)[..., 0, 1] == 0.0)  # agent a's padded action dim
    _, est0, _, td_est0 = run(jax.random.PRNGKey(0), 0.0)
    assert float(np.abs(est.advantages - td_est.advantages).max()) > 1e-3  # the check below is not vacuous
    np.testing.assert_allclose(est0.advantages, td_est0.advantages, atol=1e-6)
    np.testing.assert_allclose(est0.sample_variance, 0.0, atol=1e-10)


@needs_brax
# PERLA only: a V-critic on Box actions trains in test_algorithms_train_on_continuous_actions (the suite's time budget)
@pytest.mark.parametrize("algo", ["perla_mappo"])
def test_mabrax_ant_trains_a_few_updates(algo):
    """ant_4x2 end to end at a tiny budget (compiling brax's physics dominates: about 30 s per algorithm)."""
    cfg = Config.applicable_of(dict(
        env="ant_4x2", env_kwargs={"episode_length": 4}, algo=algo, num_envs=2, num_steps=4, total_timesteps=16,
        num_minibatches=1, update_epochs=1, k=2, own_action_samples=2, actor_hidden=(8,), critic_hidden=(8,)))
    trainer = make_trainer(cfg)
    state, metrics = jax.jit(lambda k: trainer.run_updates(trainer.init(k), 2))(jax.random.PRNGKey(0))
    assert set(metrics) == set(METRICS) and all(v.shape == (2,) for v in metrics.values())
    for name in ("return", "actor_loss", "critic_loss", "entropy", "critic_sample_var"):
        assert np.isfinite(np.asarray(metrics[name])).all(), name
    np.testing.assert_array_equal(metrics["episode_length"], 4.0)  # two 4-step episodes per env and update
    assert (float(metrics["critic_sample_var"][1]) > 0.0) == (algo == "perla_mappo")  # [0]: the others' part is 0
    assert state.obs.shape == (2, 4, 18) and int(state.update) == 2
