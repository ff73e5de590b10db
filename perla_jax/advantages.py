"""TD(lambda) returns and advantages as small pure functions (rlax style), and the registry of PERLA's
advantage estimators (``ADVANTAGE_ESTIMATORS``, chosen by ``Config.advantage``).

Time is the leading axis ``[T, ...]``; trailing axes (environments, agents) broadcast.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import chex
import jax
import jax.numpy as jnp


def lambda_returns(
    rewards: chex.Array,
    next_values: chex.Array,
    terminated: chex.Array,
    episode_end: chex.Array,
    gamma: float,
    lam: float,
) -> chex.Array:
    """TD(lambda) returns ``[T, ...]`` with separate termination and truncation.

    G_t = r_t + gamma (1 - term_t) [next_v_t + lam (1 - end_t) (G_{t+1} - next_v_t)].

    Args:
      rewards: ``[T, ...]`` r_t.
      next_values: ``[T, ...]`` bootstrap value of the state the step reached (before any reset);
        ignored where ``terminated``.
      terminated: ``[T, ...]`` the step ended the episode in a terminal state (no bootstrap).
      episode_end: ``[T, ...]`` the step ended the episode for any reason (termination or time
        limit): the lambda-recursion is cut there, a truncated step still bootstraps on next_values.
      gamma, lam: discount and lambda.
    """
    not_term = 1.0 - terminated.astype(rewards.dtype)
    carry_on = lam * (1.0 - episode_end.astype(rewards.dtype))

    def step(g_next, xs):
        r, v, nt, c = xs
        g = r + gamma * nt * (v + c * (g_next - v))
        return g, g

    _, returns = jax.lax.scan(
        step, next_values[-1], (rewards, next_values, not_term, carry_on), reverse=True
    )
    return returns


def gae(
    rewards: chex.Array,
    values: chex.Array,
    next_values: chex.Array,
    terminated: chex.Array,
    episode_end: chex.Array,
    gamma: float,
    lam: float,
) -> tuple[chex.Array, chex.Array]:
    """Generalised advantage estimation; returns (advantages, lambda-returns), both ``[T, ...]``.

    The advantage is the lambda-return minus ``values``, i.e. the lam-weighted sum of TD errors
    delta_t = r_t + gamma (1 - term_t) next_v_t - v_t, cut at episode ends.
    """
    returns = lambda_returns(rewards, next_values, terminated, episode_end, gamma, lam)
    return returns - values, returns


def expected_value(q_all: chex.Array, probs: chex.Array) -> chex.Array:
    """V(s) = sum_a pi(a) Q(s, a): ``[..., A]`` x ``[..., A]`` -> ``[...]``."""
    return jnp.sum(q_all * probs, axis=-1)


def take_action(values: chex.Array, actions: chex.Array) -> chex.Array:
    """``values [..., A]`` at integer ``actions [...]`` -> ``[...]``."""
    return jnp.take_along_axis(values, actions[..., None], axis=-1)[..., 0]


def next_step_values(values: chex.Array, final_values: chex.Array, ended: chex.Array) -> chex.Array:
    """Bootstrap values ``[T, E, N]`` of the state each step reached.

    Where the episode went on, that state is the next step's, so its value estimate is reused (then GAE
    over these values telescopes exactly); where the episode ended, or at the last step, it is the
    value of the final observation (used only on truncation: ``lambda_returns`` drops it on termination).
    """
    following = jnp.concatenate([values[1:], final_values[-1:]], axis=0)
    return jnp.where(ended[..., None], final_values, following)


@chex.dataclass(frozen=True)
class MarginalValues:
    """PERLA's marginal critic values along a rollout, what every advantage estimator starts from."""

    q_taken: chex.Array  # [T, E, N] Q^_i(s_t, a_i,t), the K-sample marginal at the own action taken
    v_now: chex.Array  # [T, E, N] V^_i(s_t) = E_{a_i ~ pi_i} Q^_i(s_t, a_i)
    v_final: chex.Array  # [T, E, N] V^_i(s'_t) at the state each step reached (before any reset)
    ended: chex.Array  # [T, E] the step ended its episode (termination or time limit)
    q_joint: chex.Array  # [T, E, N] Q(s_t, a_i,t, a_-i,t), the critic at the joint action taken


@dataclasses.dataclass(frozen=True)
class TDLambda:
    """The TD(lambda) recursions of one rollout: its rewards ``[T, E, N]`` and episode ends ``[T, E]``."""

    rewards: chex.Array
    terminated: chex.Array
    ended: chex.Array
    gamma: float
    lam: float

    def returns(self, next_values: chex.Array) -> chex.Array:
        """TD(lambda) returns ``[T, E, N]`` bootstrapping on ``next_values`` (see ``lambda_returns``)."""
        return lambda_returns(
            self.rewards, next_values, self.terminated[..., None], self.ended[..., None], self.gamma, self.lam
        )

    def trace(self, x: chex.Array) -> chex.Array:
        """sum_l (gamma lambda)^l x_{t+l} within each episode, ``[T, E, N]``: the weights GAE gives each step's
        TD error, applied to ``x``."""
        zeros = jnp.zeros_like(x)
        return lambda_returns(x, zeros, self.terminated[..., None], self.ended[..., None], self.gamma, self.lam)


# (marginal values, TD(lambda) of the rollout) -> (critic regression targets, advantages), both [T, E, N]
AdvantageEstimator = Callable[[MarginalValues, TDLambda], tuple[chex.Array, chex.Array]]
ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {}


def register_advantage(name: str) -> Callable[[AdvantageEstimator], AdvantageEstimator]:
    """Registers an estimator under ``name``: it becomes a valid ``Config.advantage`` and ``--advantage``."""

    def register(fn: AdvantageEstimator) -> AdvantageEstimator:
        if name in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage={name!r} is registered twice")
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn

    return register


@register_advantage("td")
def td_error(values: MarginalValues, td: TDLambda) -> tuple[chex.Array, chex.Array]:
    """GAE over r + gamma V^(s') - V^(s)."""
    returns = td.returns(next_step_values(values.v_now, values.v_final, values.ended))
    return returns, returns - values.v_now


@register_advantage("sarsa")
def sarsa(values: MarginalValues, td: TDLambda) -> tuple[chex.Array, chex.Array]:
    """GAE over r + gamma Q^(s', a') - Q^(s, a), Algorithm 1 read literally.

    Q^_i(s_{t+1}, a_i,t+1) where the next action is in the batch; the expectation V^_i(s') where it is not
    (the last step, or a step that ended an episode, whose next action was never taken).
    """
    returns = td.returns(next_step_values(values.q_taken, values.v_final, values.ended))
    return returns, returns - values.q_taken


def control_variate(values: MarginalValues, td: TDLambda, beta: float | None) -> tuple[chex.Array, chex.Array]:
    """GAE over delta_u - beta c_u with c_u = Q(s_u, a_i,u, a_-i,u) - Q^_i(s_u, a_i,u): the others' taken actions'
    value minus its K-sample marginal.

    The taken a_-i and the K samples come from the same policies, so E[c_u | s_u, a_i,u, the past] = 0 for any
    critic: every beta leaves the policy gradient's expectation that of ``td`` (beta = 0). With beta = 1 each
    step's noise from the others' actions, as far as the critic models it, is replaced by its K-sample average.
    ``beta=None`` picks the control-variate optimum Cov(A, C) / Var(C) over the batch, clipped to [0, 1], where A
    is the ``td`` advantage and C the GAE-weighted sum of c: near 0 when c carries only critic error.
    """
    returns, advantages = td_error(values, td)
    c_trace = td.trace(values.q_joint - values.q_taken)
    if beta is None:
        centred_c = c_trace - c_trace.mean()
        cov = jnp.mean((advantages - advantages.mean()) * centred_c)
        beta = jnp.clip(cov / (jnp.mean(centred_c**2) + 1e-12), 0.0, 1.0)
    return returns, advantages - beta * c_trace


def others_share(values: MarginalValues, td: TDLambda) -> chex.Array:
    """Share of the one-step TD errors' variance that the others' taken actions explain, as far as the critic
    models them (the perla-signal metric): the squared correlation over the batch (steps, environments and agents
    pooled) of delta_t = r_t + gamma V^(s'_t) - V^(s_t) with c_t = Q(s_t, a_i,t, a_-i,t) - Q^_i(s_t, a_i,t), i.e.
    the fraction of Var(delta) that the best multiple of c removes. Near 0 where the others' actions do not move
    the value (or the critic does not model them). A scalar ``[]``.

    With an exact critic of a one-step game: V^_i(s) = sum_b pi_i(b) Q^_i(s, b) and Q^_i(s, a_i) average the SAME
    K samples a_-i^(k), so V^'s sampling noise enters delta and correlates with c. Write g(a) = Q(s, a) -
    E_{a'_-i} Q(s, a_i, a'_-i) for the others' effect, h(a_-i) = E_{b ~ pi_i} g(b, a_-i) for its part that does
    not depend on a_i, sigma^2 = E g^2 and tau^2 = E h^2 <= sigma^2. Then
      Cov(delta, c) = sigma^2 + tau^2 / K,    Var(c) = (1 + 1/K) sigma^2,
      Var(delta) = Var_{a_i}(E_{a_-i} Q) + sigma^2 + tau^2 / K + Var(reward noise),
    each averaged over states and agents, and the share is Cov^2 / (Var(delta) Var(c)). Where the others' effect
    does not depend on a_i (additive games such as ``credit``: tau = sigma) that is Var(c) / Var(delta) =
    (1 + 1/K) sigma^2 / Var(delta) (``perla_jax.envs.credit.credit_others_share``); with no such part (tau = 0), or with the exact V in
    place of V^, it is sigma^2 / ((1 + 1/K) Var(delta)).
    """
    one_step = dataclasses.replace(td, lam=0.0)
    delta = one_step.returns(next_step_values(values.v_now, values.v_final, values.ended)) - values.v_now
    c = values.q_joint - values.q_taken
    delta, c = delta - delta.mean(), c - c.mean()
    cov = jnp.mean(delta * c)
    return cov**2 / (jnp.mean(delta**2) * jnp.mean(c**2) + 1e-12)


register_advantage("perla_cv")(functools.partial(control_variate, beta=None))
register_advantage("perla_cv1")(functools.partial(control_variate, beta=1.0))
