"""A few updates of every algorithm: shapes, finite values, determinism; and one run that learns."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perla_jax import METRICS, Config, make_train, make_trainer
from perla_jax.agents import Agents
from perla_jax.critics import make_critic
from perla_jax.rollout import rollout
from perla_jax.train import _update_metrics, epoch_permutations
from perla_jax.types import CriticEstimates

TINY = dict(
    num_envs=4,
    num_steps=32,  # > 26 so MPE episodes end in every rollout and the return is defined
    total_timesteps=4 * 32 * 2,
    num_minibatches=2,
    update_epochs=2,
    actor_hidden=(16, 16),
    critic_hidden=(16, 16),
    k=3,
)
VARIANTS = {
    "perla_mappo-td": dict(algo="perla_mappo", advantage="td"),
    "perla_mappo-sarsa": dict(algo="perla_mappo", advantage="sarsa"),
    "perla_ippo-k1": dict(algo="perla_ippo", k=1),  # K = 1: the ordinary single-sample CT-DE Q-critic
    "mappo": dict(algo="mappo"),
    "ippo-unshared-ids": dict(algo="ippo", share_actor=False, actor_agent_id=True),
}
SEEDS = 2


@pytest.fixture(scope="module", params=list(VARIANTS))
def trained(request):
    cfg = Config.applicable_of({**TINY, **VARIANTS[request.param]})  # K only where the critic samples
    train = jax.jit(jax.vmap(make_train(cfg)))
    keys = jax.random.split(jax.random.PRNGKey(0), SEEDS)
    return cfg, train, keys, train(keys)


def test_shapes_and_finite_metrics(trained):
    cfg, _, _, out = trained
    metrics = out["metrics"]
    assert set(metrics) == set(METRICS)
    for name, value in metrics.items():
        assert value.shape == (SEEDS, cfg.num_updates), name
        if name not in ("win_rate", "others_share"):
            assert np.all(np.isfinite(value)), name
    assert np.all(np.isnan(metrics["win_rate"]))  # MPE episodes cannot be won
    # The perla-signal share is a squared correlation; a V-critic has no others' actions to explain anything with.
    share = metrics["others_share"]
    assert np.all((share >= 0) & (share <= 1)) if cfg.uses_q_critic else np.all(np.isnan(share))
    np.testing.assert_array_equal(metrics["env_steps"][0], [128, 256])
    np.testing.assert_array_equal(metrics["episode_length"], 26.0)
    state = out["runner_state"]
    assert state.obs.shape == (SEEDS, cfg.num_envs, 3, 18)
    np.testing.assert_array_equal(state.update, cfg.num_updates)
    var = metrics["critic_sample_var"]
    assert np.all(var > 0) if cfg.uses_q_critic and cfg.k > 1 else np.all(var == 0)
    # Different seeds give different runs.
    assert not np.array_equal(metrics["actor_loss"][0], metrics["actor_loss"][1])


def test_same_seed_gives_identical_metrics(trained):
    _, train, keys, out = trained
    again = train(keys)
    for name in METRICS:
        np.testing.assert_array_equal(again["metrics"][name], out["metrics"][name], err_msg=name)


@pytest.mark.parametrize("trained", ["perla_mappo-td"], indirect=True)
def test_chunked_updates_equal_one_scan(trained):
    """Running the updates one compiled call at a time gives bit-identical metrics to the full scan."""
    cfg, _, keys, out = trained
    trainer = make_trainer(cfg)
    init = jax.jit(jax.vmap(trainer.init))
    step = jax.jit(jax.vmap(lambda s: trainer.run_updates(s, 1)))
    state = init(keys)
    chunks = []
    for _ in range(cfg.num_updates):
        state, m = step(state)
        chunks.append(m)
    for name in ("return", "actor_loss", "critic_loss"):
        got = np.concatenate([np.asarray(c[name]) for c in chunks], axis=1)
        np.testing.assert_allclose(got, out["metrics"][name], rtol=1e-6, atol=1e-6, err_msg=name)


def test_perla_mappo_learns_on_mpe():
    """Measured on this code (2026-11-25, 3 seeds): return over 25 updates rises from about -27.5 to
    about -23; the threshold asks for less than half of that gain."""
    cfg = Config(algo="perla_mappo", k=4, actor_lr=1e-3, critic_lr=1e-3, total_timesteps=16 * 128 * 25)
    ret = np.asarray(jax.jit(make_train(cfg))(jax.random.PRNGKey(0))["metrics"]["return"])
    first, last = ret[:3].mean(), ret[-3:].mean()
    assert last > first + 2.0, (first, last)


def test_critic_time_chunk_changes_memory_not_results():
    """Evaluating the K-sample critic batch one time step at a time gives the same estimates as all at once."""
    cfg = Config(**{**TINY, "num_envs": 2, "num_steps": 8, "total_timesteps": 16, "num_minibatches": 1})
    trainer = make_trainer(cfg)
    state = jax.jit(trainer.init)(jax.random.PRNGKey(1))
    _, _, traj, *_ = rollout(trainer.env, trainer.agents, state.actor.params, state.env_state, state.obs,
                         jax.random.PRNGKey(2), cfg.num_steps)
    results = []
    for chunk in (1, 2 * cfg.num_steps):
        chunked = cfg.replace(critic_time_chunk=chunk)
        critic = make_critic(chunked, trainer.env, Agents.build(chunked, trainer.env))
        results.append(jax.jit(lambda traj: critic.estimate(state.actor.params, state.critic.params, traj,
                                                             jax.random.PRNGKey(3)))(traj))
    for name in ("advantages", "targets", "old_predictions", "sample_variance"):
        np.testing.assert_allclose(getattr(results[0], name), getattr(results[1], name), rtol=1e-5, atol=1e-6)


def test_update_metrics_reports_the_critics_explained_variance():
    """critic_ev is 1 - Var(targets - old_predictions) / Var(targets) over the whole [T, E, N] batch: residuals
    (0, 0, 0, -2) against targets 1..4 give 1 - 0.75 / 1.25 = 0.4; constant targets give NaN."""
    targets = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(2, 1, 2)  # [T, E, N]
    zeros = jnp.zeros_like(targets)
    est = CriticEstimates(advantages=zeros, targets=targets, old_predictions=targets.at[1, 0, 1].set(6.0),
                          joint_samples=None, sample_variance=zeros, others_share=jnp.float32(jnp.nan))
    no_episode = jnp.zeros((2, 1), bool)
    traj = types.SimpleNamespace(terminated=no_episode, truncated=no_episode, won=no_episode,
                                 episode_return=jnp.zeros((2, 1)), episode_length=jnp.zeros((2, 1)))
    env = types.SimpleNamespace(reports_wins=False)
    metrics = _update_metrics(env, traj, est, {"critic_loss": jnp.ones(2)}, env_steps=jnp.array(2))
    assert float(metrics["critic_ev"]) == pytest.approx(0.4)
    flat = est.replace(targets=jnp.ones_like(targets))
    assert np.isnan(float(_update_metrics(env, traj, flat, {}, env_steps=jnp.array(2))["critic_ev"]))


@pytest.mark.parametrize("recurrent", [False, True])
def test_epoch_permutations_are_each_epochs_own_shuffle(recurrent):
    # Drawn together before the epochs, they must be the permutations each epoch would draw from its own key.
    cfg = Config(num_envs=4, num_steps=8, update_epochs=3)
    key = jax.random.PRNGKey(7)
    perms = np.asarray(epoch_permutations(cfg, recurrent, key))
    n = cfg.num_envs if recurrent else cfg.batch_size
    assert perms.shape == (3, n)
    for row, k in zip(perms, jax.random.split(key, 3)):
        np.testing.assert_array_equal(row, np.asarray(jax.random.permutation(k, n)))
        assert sorted(row.tolist()) == list(range(n))
    assert len({tuple(row) for row in perms.tolist()}) == 3


def test_update_stages_are_what_train_step_computes():
    """The stages ``profile_step.py`` times alone, run with train_step's own keys, reproduce its next state's
    environment and its metrics of the rollout, the critic's estimates and the pg spread."""
    cfg = Config(**{**TINY, "algo": "perla_mappo", "num_envs": 2, "total_timesteps": 64, "num_minibatches": 1})
    trainer = make_trainer(cfg)  # 32 steps: episodes end, so the return is defined
    state = jax.jit(trainer.init)(jax.random.PRNGKey(4))
    _, k_roll, k_est, _ = jax.random.split(state.key, 4)

    @jax.jit
    def stages(s):
        env_state, obs, traj, _, _ = trainer.stages.collect(s, k_roll)
        est = trainer.stages.estimate(s, traj, k_est)
        return obs, traj, est, trainer.stages.spread(s, traj, est)

    obs, traj, est, (pg_var, pg_snr) = stages(state)
    new_state, metrics = jax.jit(trainer.train_step)(state)
    np.testing.assert_array_equal(obs, new_state.obs)
    ended = np.asarray(traj.terminated | traj.truncated).sum()
    assert ended > 0
    np.testing.assert_allclose(metrics["return"], np.asarray(traj.episode_return).sum() / ended, rtol=1e-6)
    np.testing.assert_allclose(metrics["critic_sample_var"], np.asarray(est.sample_variance).mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["others_share"], est.others_share, rtol=1e-6)
    np.testing.assert_allclose([metrics["pg_var"], metrics["pg_snr"]], [pg_var, pg_snr], rtol=1e-5)
    assert np.isfinite(float(pg_var)) and float(est.sample_variance.mean()) > 0
