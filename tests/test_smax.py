"""SMAX: configuration, world state, action masks, termination vs truncation, win rate, training end to end.

One compiled program per algorithm (module fixtures) keeps the SMAX compile cost to two programs.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from programs import rollout_estimate_train

from perla_jax import Config, make_env, make_trainer
from perla_jax.agents import Agents
from perla_jax.envs.smax import map_names
from perla_jax.evaluation import Episodes, summarise

MAX_STEPS = 5  # episodes time out after MAX_STEPS + 1 transitions
TINY = dict(env="smax", map_name="3m", env_kwargs={"max_steps": MAX_STEPS}, num_envs=2, num_steps=16,
            total_timesteps=64, num_minibatches=2, update_epochs=1, k=3, actor_hidden=(8, 8), critic_hidden=(8, 8))
UPDATES = 2


@pytest.fixture(scope="module")
def perla_run():
    """One program: a rollout with its critic estimates (for the mask checks) and two training updates."""
    # The marginal target keeps the K joint samples in the estimates (the joint target draws the same samples but
    # does not store them), so the mask checks can read them.
    trainer = make_trainer(Config(**TINY, algo="perla_mappo", critic_target="marginal"))
    reset_state = lambda state, traj: jax.vmap(trainer.env.critic_state)(state.env_state.inner, state.obs)
    return trainer, *rollout_estimate_train(trainer, UPDATES, reset_state)(jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def mappo_metrics():
    trainer = make_trainer(Config.applicable_of(dict(TINY, algo="mappo")))
    _, metrics = jax.jit(lambda k: trainer.run_updates(trainer.init(k), UPDATES))(jax.random.PRNGKey(1))
    return metrics


# ---- configuration -----------------------------------------------------------------------------------
def test_env_alias_and_full_name_and_every_map():
    assert Config(env="HeuristicEnemySMAX", map_name="2s3z").map_name == "2s3z"
    for name in ("3m", "2s3z", "3s5z", "5m_vs_6m", "3s_vs_5z", "6h_vs_8z", "10m_vs_11m", "27m_vs_30m"):
        assert name in map_names()
    for name in map_names():
        env = make_env("smax", map_name=name)
        n_enemies = env.env.num_enemies
        assert env.num_agents == env.env.num_allies and env.num_actions == n_enemies + 5
        assert env.state_dim == (env.num_agents + n_enemies) * (4 + 6 + 2)  # own features + team + type


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(env="smax", map_name="4m"), r"map_name='4m' is unknown: allowed are .*3m.*2s3z"),
        (dict(env="smax"), r"SMAX needs a map.*allowed are .*27m_vs_30m"),
        (dict(env="mpe", map_name="3m"), r"map_name='3m' is refused for env='mpe'"),
    ],
)
def test_config_refuses_bad_maps(changes, match):
    with pytest.raises(ValueError, match=match):
        Config(**changes)


def test_scenario_kwarg_is_refused():
    with pytest.raises(ValueError, match="scenario"):
        make_env("smax", {"scenario": None}, "3m")


# ---- world state -------------------------------------------------------------------------------------
def test_world_state_is_smax_world_state(perla_run):
    trainer, traj, _, reset_state, _ = perla_run
    env, T, E = trainer.env, TINY["num_steps"], TINY["num_envs"]
    assert traj.state.shape == traj.final_state.shape == (T, E, env.state_dim)
    assert traj.avail.shape == traj.final_avail.shape == (T, E, env.num_agents, env.num_actions)
    np.testing.assert_array_equal(traj.state[0], reset_state)
    # Where the episode went on, the state reached is the next step's state.
    ended = np.asarray(traj.terminated | traj.truncated)
    same = ~ended[:-1]
    np.testing.assert_array_equal(np.asarray(traj.final_state)[:-1][same], np.asarray(traj.state)[1:][same])
    np.testing.assert_array_equal(np.asarray(traj.final_avail)[:-1][same], np.asarray(traj.avail)[1:][same])
    # The observations are not the state: SMAX's state is not the concatenated observations.
    assert env.state_dim != env.num_agents * env.obs_dim
    # The factored critic's input with its state path: each agent's own observation and id, then the world state.
    inputs = dataclasses.replace(trainer.critic.inputs, state_path=True)
    features = inputs.features(traj.obs, traj.state)
    assert features.shape == (T, E, env.num_agents, env.obs_dim + env.num_agents + env.state_dim)
    np.testing.assert_array_equal(features[..., -env.state_dim:], np.broadcast_to(
        np.asarray(traj.state)[:, :, None], features[..., -env.state_dim:].shape))


# ---- action masks ------------------------------------------------------------------------------------
def test_masked_policy_gives_zero_probability_and_finite_loss_terms():
    env = make_env("smax", map_name="3m")
    agents = Agents.build(Config(**TINY, network="ff"), env)  # the recurrent actor masks with the same head
    params = agents.init_actor(jax.random.PRNGKey(0))
    obs = jax.random.normal(jax.random.PRNGKey(1), (4, env.num_agents, env.obs_dim))
    avail = jax.random.bernoulli(jax.random.PRNGKey(2), 0.5, (4, env.num_agents, env.num_actions)).at[..., 4].set(True)
    policy = agents.policy(params, obs, avail)
    probs = np.asarray(policy.probs)
    assert np.all(probs[~np.asarray(avail)] == 0.0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    # Unmasked probabilities renormalised over the available actions.
    free = np.asarray(agents.policy(params, obs).probs) * np.asarray(avail)
    np.testing.assert_allclose(probs, free / free.sum(-1, keepdims=True), rtol=1e-5)
    grad = jax.grad(lambda p: agents.policy(p, obs, avail).entropy().sum())(params)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grad))
    assert np.isfinite(np.asarray(policy.log_prob(jnp.zeros((4, env.num_agents), jnp.int32)))).all()


def test_rollout_and_k_samples_never_take_unavailable_actions(perla_run):
    _, traj, est, _, _ = perla_run
    avail = np.asarray(traj.avail)  # [T, E, N, A]
    assert not avail.all(), "the test needs some unavailable actions"
    taken = np.take_along_axis(avail, np.asarray(traj.action)[..., None], axis=-1)[..., 0]
    assert taken.all()
    samples = np.asarray(est.joint_samples)  # [T, E, K, N]
    assert samples.shape[2] == TINY["k"]
    sampled = np.take_along_axis(avail[:, :, None], samples[..., None], axis=-1)[..., 0]  # [T, E, K, N]
    assert sampled.all()
    # Behaviour log-probabilities are those of the masked policy: finite.
    assert np.isfinite(np.asarray(traj.log_prob)).all()


# ---- episode ends ------------------------------------------------------------------------------------
def test_timeouts_are_truncations(perla_run):
    _, traj, _, _, _ = perla_run
    ended = np.asarray(traj.terminated | traj.truncated)
    # A random policy cannot finish a battle within 6 steps: every episode times out.
    t_end = np.nonzero(ended[:, 0])[0]
    np.testing.assert_array_equal(t_end, np.arange(MAX_STEPS, TINY["num_steps"], MAX_STEPS + 1))
    assert np.asarray(traj.truncated)[ended].all() and not np.asarray(traj.terminated).any()
    np.testing.assert_array_equal(np.asarray(traj.episode_length)[ended], MAX_STEPS + 1)
    assert not np.asarray(traj.won).any()


def _with_alive(inner, alive, step):
    unit_alive = jnp.asarray(alive)
    health = jnp.where(unit_alive, inner.state.unit_health, 0.0)
    return inner.replace(state=inner.state.replace(unit_alive=unit_alive, unit_health=health, step=jnp.array(step)))


@pytest.fixture(scope="module")
def smax_reset():
    env = make_env("smax", {"max_steps": MAX_STEPS}, "3m")
    return env, env.reset(jax.random.PRNGKey(0))[1]


@pytest.mark.parametrize(
    "alive, step, want",  # want = (terminated, truncated, won); 3m: allies first, then enemies
    [
        ([1, 1, 1, 1, 1, 1], MAX_STEPS, (False, True, False)),  # time limit only
        ([1, 0, 0, 0, 0, 0], 2, (True, False, True)),  # enemies dead: won
        ([0, 0, 0, 1, 0, 0], 2, (True, False, False)),  # allies dead: lost
        ([0, 0, 0, 0, 0, 0], 2, (True, False, False)),  # both dead: a draw
        ([1, 1, 0, 0, 0, 0], MAX_STEPS, (True, False, True)),  # won on the time-limit step: terminated
        ([1, 1, 1, 1, 1, 1], 2, (False, False, False)),  # going on
    ],
)
def test_episode_end_tells_battle_ends_from_timeouts(alive, step, want, smax_reset):
    env, state = smax_reset
    inner = _with_alive(state.inner, np.array(alive, bool), step)
    done = env.env.is_terminal(inner)  # jaxmarl's own end test, as step_env computes it
    got = env.episode_end(inner, done, {})  # SMAX reads the units, not jaxmarl's info
    assert tuple(bool(x) for x in got) == want


# ---- training and metrics ----------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ["perla_mappo", "mappo"])
def test_training_runs_with_finite_metrics(algo, perla_run, mappo_metrics):
    metrics = perla_run[-1] if algo == "perla_mappo" else mappo_metrics
    for name, values in metrics.items():
        assert values.shape == (UPDATES,), name
        if not (name == "others_share" and algo == "mappo"):  # NaN: a V-critic has no others' actions
            assert np.isfinite(np.asarray(values)).all(), name
    # Every episode timed out: the win rate over ended episodes is 0, not NaN.
    np.testing.assert_array_equal(np.asarray(metrics["win_rate"]), 0.0)
    np.testing.assert_array_equal(np.asarray(metrics["episode_length"]), MAX_STEPS + 1)


def test_evaluation_summary_reports_win_rate():
    won = np.array([[True, False, True, True], [False, False, False, True]])
    episodes = Episodes(team_return=np.ones((2, 4)), length=np.full((2, 4), 6.0), ended=np.ones((2, 4), bool), won=won)
    win = summarise(episodes, "greedy", 10, 0)["metrics"]["win_rate"]
    assert win["per_seed"] == [0.75, 0.25] and win["mean"] == 0.5
    no_wins = Episodes(team_return=np.ones((2, 4)), length=np.full((2, 4), 6.0), ended=np.ones((2, 4), bool))
    assert "win_rate" not in summarise(no_wins, "greedy", 10, 0)["metrics"]


def test_render_draws_smax_units_per_step(perla_run):
    """--render on SMAX: one frame per step of a timed-out episode (MAX_STEPS + 1), allies blue and enemies red
    on the map, frames that change as units move."""
    from perla_jax.rendering import draw_frames, record_episodes

    trainer = perla_run[0]
    params = trainer.agents.init_actor(jax.random.PRNGKey(2))
    rec = record_episodes(trainer.env, trainer.agents, params, jax.random.PRNGKey(3), 1, "stochastic")
    assert rec.positions.shape == (1, MAX_STEPS + 1, 6, 2) and rec.visible.shape == (1, MAX_STEPS + 1, 6)
    frames = draw_frames(trainer.env, rec)
    assert len(frames) == int(rec.live.sum()) == MAX_STEPS + 1
    rgb = frames[0].astype(int)
    blue = (rgb[..., 2] > 150) & (rgb[..., 0] < 100)
    red = (rgb[..., 0] > 150) & (rgb[..., 2] < 100)
    assert blue.sum() > 20 and red.sum() > 20
    assert any(not np.array_equal(frames[0], f) for f in frames[1:])
