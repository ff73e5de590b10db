"""PERLA-MAPPO/IPPO and the MAPPO/IPPO baselines in one jitted ``train_step`` (PureJaxRL convention).

``make_train(cfg)(rng)`` runs the whole training loop as a ``lax.scan`` over updates, so
``jax.jit(jax.vmap(make_train(cfg)))(jax.random.split(key, S))`` trains S seeds in one compiled program.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from perla_jax.agents import Agents
from perla_jax.config import Config
from perla_jax.critics import Critic, make_critic
from perla_jax.diagnostics import explained_variance, policy_gradient_spread
from perla_jax.envs.base import MultiAgentEnv
from perla_jax.envs.custom import wrap_env
from perla_jax.envs.registry import make_env
from perla_jax.losses import clipped_value_loss, normalise, ppo_actor_loss
from perla_jax.rollout import rollout
from perla_jax.types import METRICS, Batch, CriticEstimates, RunnerState, SequenceStarts, Trajectory
from perla_jax.value_norm import ValueNorm, initial_value_norm


@dataclasses.dataclass(frozen=True)
class UpdateStages:
    """The stages of one update before its PPO epochs, as pure functions of the runner state; ``train_step``
    composes them, and ``experiments/profile_step.py`` times programs that stop after each."""

    # (state, key) -> (env_state, obs, traj [T, E, N, ...], actor_carry, first): the rollout.
    collect: Callable[[RunnerState, chex.PRNGKey], tuple]
    # (state, traj, key) -> CriticEstimates: values or the K-sample marginal, targets and advantages.
    estimate: Callable[[RunnerState, Trajectory, chex.PRNGKey], CriticEstimates]
    # (state, traj, estimates) -> (pg_var, pg_snr): the spread of the E per-environment policy gradients.
    spread: Callable[[RunnerState, Trajectory, CriticEstimates], tuple[chex.Array, chex.Array]]


@dataclasses.dataclass(frozen=True)
class Trainer:
    """Pure functions of one training run: ``init(rng) -> RunnerState`` and
    ``train_step(RunnerState) -> (RunnerState, metrics)`` (one rollout plus its PPO epochs); ``step_without_spread``
    is the same update with ``pg_var`` and ``pg_snr`` NaN (``Config.pg_spread_every``); ``stages`` are its first
    stages alone."""

    cfg: Config
    env: MultiAgentEnv
    agents: Agents
    critic: Critic
    stages: UpdateStages
    init: Callable[[chex.PRNGKey], RunnerState]
    train_step: Callable[[RunnerState], tuple[RunnerState, dict[str, chex.Array]]]
    step_without_spread: Callable[[RunnerState], tuple[RunnerState, dict[str, chex.Array]]]

    def run_updates(self, state: RunnerState, num_updates: int) -> tuple[RunnerState, dict[str, chex.Array]]:
        """``num_updates`` train steps in a ``lax.scan``; metrics are ``[num_updates]`` each. With
        ``pg_spread_every = P > 1`` every P-th update of the call computes the spread (so a call that starts at a
        multiple of P computes it where the update count is one); a static schedule, so vmapped seeds skip the
        work rather than compute and discard it."""
        every = self.cfg.pg_spread_every
        scan = lambda step, s, n: jax.lax.scan(lambda c, _: step(c), s, None, n)
        if every == 1:
            return scan(self.train_step, state, num_updates)

        def block(s, _):
            s, quiet = scan(self.step_without_spread, s, every - 1)
            s, last = self.train_step(s)
            return s, jax.tree.map(lambda q, x: jnp.concatenate([q, x[None]]), quiet, last)

        blocks, rest = divmod(num_updates, every)
        state, metrics = jax.lax.scan(block, state, None, blocks)
        metrics = jax.tree.map(lambda x: x.reshape(blocks * every, *x.shape[2:]), metrics)
        if rest:
            state, tail = scan(self.step_without_spread, state, rest)
            metrics = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), metrics, tail)
        return state, metrics


def make_trainer(cfg: Config, env: Any = None) -> Trainer:
    """``env`` overrides ``cfg.env``: your own environment with jaxmarl's ``MultiAgentEnv`` interface
    (``perla_jax.envs.custom``; ``Config(env="custom")`` gives it that family's defaults), or one already wrapped."""
    if env is None:
        env = make_env(cfg.env, cfg.env_kwargs, cfg.map_name, cfg.time_limit)
    env = wrap_env(env, cfg.time_limit)
    if env.continuous and cfg.network == "rnn":
        raise ValueError(f"network='rnn' is not supported for env {env.name!r} (Box actions): allowed is ff")
    agents = Agents.build(cfg, env)
    critic = make_critic(cfg, env, agents)
    stages = _make_stages(cfg, env, agents, critic)
    return Trainer(
        cfg, env, agents, critic, stages, _make_init(cfg, env, agents, critic),
        _make_train_step(cfg, env, agents, critic, stages), _make_train_step(cfg, env, agents, critic, stages, False),
    )


def make_train(cfg: Config, env: Any = None) -> Callable[[chex.PRNGKey], dict]:
    """``train(rng) -> {"runner_state", "metrics"}`` with metrics ``[num_updates]`` per name in METRICS; ``env`` as in
    ``make_trainer``."""
    trainer = make_trainer(cfg, env)

    def train(rng: chex.PRNGKey) -> dict:
        state, metrics = trainer.run_updates(trainer.init(rng), cfg.num_updates)
        return {"runner_state": state, "metrics": metrics}

    return train


def _optimiser(cfg: Config, lr: float) -> optax.GradientTransformation:
    grad_steps = cfg.num_updates * cfg.update_epochs * cfg.num_minibatches
    schedule = optax.linear_schedule(lr, 0.0, grad_steps) if cfg.anneal_lr else lr
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(schedule, eps=1e-5))


def _make_init(cfg: Config, env: MultiAgentEnv, agents: Agents, critic: Critic) -> Callable[[chex.PRNGKey], RunnerState]:
    def init(rng: chex.PRNGKey) -> RunnerState:
        rng, k_actor, k_critic, k_env = jax.random.split(rng, 4)
        actor_train = TrainState.create(
            apply_fn=agents.actor.apply, params=agents.init_actor(k_actor), tx=_optimiser(cfg, cfg.actor_lr)
        )
        critic_train = TrainState.create(
            apply_fn=critic.network.apply, params=critic.init(k_critic), tx=_optimiser(cfg, cfg.critic_lr)
        )
        obs, env_state = jax.vmap(env.reset)(jax.random.split(k_env, cfg.num_envs))
        return RunnerState(
            actor=actor_train,
            critic=critic_train,
            env_state=env_state,
            obs=obs,
            key=rng,
            update=jnp.array(0),
            first=jnp.ones((cfg.num_envs,), bool),
            actor_carry=agents.initial_actor_carry((cfg.num_envs,)),
            critic_carry=critic.inputs.initial_carry((cfg.num_envs,)),
            value_norm=initial_value_norm() if cfg.value_norm else None,
        )

    return init


def _make_losses(cfg: Config, agents: Agents, critic: Critic):
    def actor_loss(params, mb: Batch, starts: SequenceStarts | None):
        policy = agents.actor_sequence(params, None if starts is None else starts.actor, mb.obs, mb.first, mb.avail)
        return ppo_actor_loss(
            policy.log_prob(mb.action),
            mb.log_prob,
            normalise(mb.advantages),
            policy.entropy(),
            cfg.clip_eps,
            cfg.ent_coef,
        )

    def critic_loss(params, mb: Batch, starts: SequenceStarts | None):
        prediction = critic.predict(params, mb, None if starts is None else starts.critic)
        loss = clipped_value_loss(prediction, mb.old_predictions, mb.targets, cfg.clip_eps)
        return cfg.vf_coef * loss, loss

    return actor_loss, critic_loss


def _make_minibatch_step(cfg: Config, agents: Agents, critic: Critic):
    actor_loss, critic_loss = _make_losses(cfg, agents, critic)
    actor_grad = jax.value_and_grad(actor_loss, has_aux=True)
    critic_grad = jax.value_and_grad(critic_loss, has_aux=True)

    def minibatch_step(nets, minibatch: tuple[Batch, SequenceStarts | None]):
        actor_state, critic_state = nets
        (_, actor_stats), g_actor = actor_grad(actor_state.params, *minibatch)
        (_, value_loss), g_critic = critic_grad(critic_state.params, *minibatch)
        nets = (actor_state.apply_gradients(grads=g_actor), critic_state.apply_gradients(grads=g_critic))
        return nets, {**actor_stats, "critic_loss": value_loss}

    return minibatch_step


def _make_epoch(cfg: Config, agents: Agents, critic: Critic):
    """``epoch(nets, perm, batch [T, E, ...], starts) -> (nets, stats [M])``: one pass over the minibatches that
    ``perm`` (from ``epoch_permutations``) shuffles."""
    minibatch_step = _make_minibatch_step(cfg, agents, critic)
    b, m, e = cfg.batch_size, cfg.num_minibatches, cfg.num_envs

    def epoch(nets, perm: chex.Array, batch: Batch, starts: SequenceStarts | None):
        if starts is None:  # feed-forward: minibatches of single transitions, [T, E] flattened to [B]
            flat = jax.tree.map(lambda x: x.reshape(b, *x.shape[2:]), batch)
            shuffled = jax.tree.map(lambda x: x[perm].reshape(m, b // m, *x.shape[1:]), flat)
            return jax.lax.scan(minibatch_step, nets, (shuffled, None))
        # Recurrent: minibatches of whole sequences, [T, E] -> M x [T, E/M], with their start hidden states.
        split_time_major = lambda x: jnp.moveaxis(x[:, perm].reshape(x.shape[0], m, e // m, *x.shape[2:]), 1, 0)
        split_starts = lambda x: x[perm].reshape(m, e // m, *x.shape[1:])
        return jax.lax.scan(
            minibatch_step, nets, (jax.tree.map(split_time_major, batch), jax.tree.map(split_starts, starts))
        )

    return epoch


def epoch_permutations(cfg: Config, recurrent: bool, key: chex.PRNGKey) -> chex.Array:
    """``[epochs, B]`` (feed-forward: transitions) or ``[epochs, E]`` (recurrent: whole sequences): each epoch's
    shuffle, drawn together in one batched sort rather than one small sort per epoch (the same permutations)."""
    n = cfg.num_envs if recurrent else cfg.batch_size
    return jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(key, cfg.update_epochs))


def _make_stages(cfg: Config, env: MultiAgentEnv, agents: Agents, critic: Critic) -> UpdateStages:
    def collect(state: RunnerState, key: chex.PRNGKey):
        return rollout(env, agents, state.actor.params, state.env_state, state.obs, key, cfg.num_steps,
                       state.actor_carry, state.first)

    def estimate(state: RunnerState, traj: Trajectory, key: chex.PRNGKey) -> CriticEstimates:
        return critic.estimate(state.actor.params, state.critic.params, traj, key, state.actor_carry,
                               state.critic_carry, state.value_norm)

    def spread(state: RunnerState, traj: Trajectory, est: CriticEstimates) -> tuple[chex.Array, chex.Array]:
        return policy_gradient_spread(agents, state.actor.params, traj, est.advantages, state.actor_carry)

    return UpdateStages(collect, estimate, spread)


def _make_train_step(cfg: Config, env: MultiAgentEnv, agents: Agents, critic: Critic, stages: UpdateStages,
                     with_spread: bool = True):
    epoch = _make_epoch(cfg, agents, critic)
    b = cfg.batch_size
    no_spread = lambda *_: (jnp.float32(jnp.nan), jnp.float32(jnp.nan))
    spread = stages.spread if with_spread else no_spread

    def train_step(state: RunnerState) -> tuple[RunnerState, dict[str, chex.Array]]:
        key, k_roll, k_est, k_epochs = jax.random.split(state.key, 4)
        # The named scopes label the compiled program's operations by stage (experiments/profile_ops.py).
        with jax.named_scope("rollout"):
            env_state, obs, traj, actor_carry, first = stages.collect(state, k_roll)
        with jax.named_scope("critic_estimates"):
            est = stages.estimate(state, traj, k_est)
            value_norm, targets, old_predictions = _in_critic_units(state.value_norm, est)
        batch = Batch(
            obs=traj.obs,
            state=traj.state,
            avail=traj.avail,
            action=traj.action,
            log_prob=traj.log_prob,
            advantages=est.advantages,
            targets=targets,
            old_predictions=old_predictions,
            joint_samples=est.joint_samples,
            first=traj.first,
        )
        with jax.named_scope("pg_spread"):
            pg_var, pg_snr = spread(state, traj, est)
        starts = SequenceStarts(actor=state.actor_carry, critic=state.critic_carry) if agents.recurrent else None
        with jax.named_scope("ppo_epochs"):
            nets, stats = jax.lax.scan(
                lambda n, perm: epoch(n, perm, batch, starts),
                (state.actor, state.critic),
                epoch_permutations(cfg, agents.recurrent, k_epochs),
            )
        with jax.named_scope("metrics"):
            metrics = _update_metrics(env, traj, est, stats, env_steps=(state.update + 1) * b)
        metrics.update(pg_var=pg_var, pg_snr=pg_snr)
        new_state = RunnerState(
            actor=nets[0],
            critic=nets[1],
            env_state=env_state,
            obs=obs,
            key=key,
            update=state.update + 1,
            first=first,
            actor_carry=actor_carry,
            critic_carry=est.critic_carry,
            value_norm=value_norm,
        )
        return new_state, {name: metrics[name] for name in METRICS}

    return train_step


def _in_critic_units(
    value_norm: ValueNorm | None, est: CriticEstimates
) -> tuple[ValueNorm | None, chex.Array, chex.Array]:
    """(statistics after this rollout, targets and rollout-time predictions in the network's units): standardised
    by the statistics updated with this rollout's targets under ``Config.value_norm``, unchanged without it."""
    if value_norm is None:
        return None, est.targets, est.old_predictions
    value_norm = value_norm.update(est.targets)
    return value_norm, value_norm.normalise(est.targets), value_norm.normalise(est.old_predictions)


def _update_metrics(
    env: MultiAgentEnv, traj: Trajectory, est: CriticEstimates, stats: dict[str, chex.Array], env_steps: chex.Array
) -> dict[str, chex.Array]:
    """One update's scalars: the epochs' mean losses, the rollout's episode statistics and how well the critic's
    rollout-time predictions explain its regression targets."""
    ended = (traj.terminated | traj.truncated).astype(jnp.float32)
    num_ended = ended.sum()
    metrics = {name: v.mean() for name, v in stats.items()}
    metrics.update(
        env_steps=env_steps,
        # Mean over episodes that ended in this rollout; NaN when none did.
        **{"return": traj.episode_return.sum() / num_ended},
        episode_length=traj.episode_length.sum() / num_ended,
        critic_sample_var=est.sample_variance.mean(),
        # Fraction of the episodes that ended in this rollout that were won; NaN without wins (MPE).
        win_rate=traj.won.sum() / num_ended if env.reports_wins else jnp.float32(jnp.nan),
        others_share=est.others_share,
        # Before the epochs fit them: the critic's own predictions against the targets it is about to regress on.
        critic_ev=explained_variance(est.targets, est.old_predictions),
    )
    return metrics
