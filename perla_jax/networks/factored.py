"""Agent-factored joint-action Q-critics (``Config.critic_arch="factored"``), discrete and continuous.

Q(s, a_i, a_-i) for agent i is a head on agent i's own encoding plus a pooled summary of the others:

    own_i   = f(x_i)                                   (x_i: agent i's critic input, optionally with the state)
    e_j     = phi(x_j, a_j) in R^r                     (one encoder shared by every agent, ids in x_j)
    pool_i  = 1/(N-1) sum_{j != i} e_j                 (sum minus self, so the K samples reuse one sum;
                                                        or attention weights over j != i, ``pool="attention"``)
    Q_i     = out(act(own_i + W pool_i))               (over own actions, or at a_i for Box actions)

Why: an MLP on the concatenated state must learn N separate context-by-action interactions, each worth 1/N
of a team reward, and at N = 32 it learns none of them (issue 24's measurement: others_share 0.004-0.013
against an exact 0.97). With phi shared across agents one interaction is learned from N times the data. The
form is DeepSets' sum-decomposition (Zaheer et al. 2017) as used by permutation-invariant critics (PIC, Liu et
al. 2019); the zero-initialised phi output follows the common practice of starting a residual branch at zero,
so an untrained critic adds no noise from the others' actions.

Cost of the K-sample marginal: for discrete actions phi is evaluated once per state for every action
(``[..., N, A, r]``); a sample is then a gather, a pooled sum and one head pass, never a full critic pass.
W and the mean pool are linear, so W may be applied after pooling (r -> H once per sample and agent) or to the
table before the gather (r -> H once per agent and action, then each sample gathers H-wide rows). The two agree to
float rounding; the table goes first for K > 1 samples, the pool for one joint action (the epochs' forward at the
action taken), the faster of the two on CPU at every K measured (BENCHMARKS.md, "What the factored critic costs").

Features ``x [..., N, F]``: the first ``agent_dim`` entries are agent j's own part (observation, time left,
one-hot id); the rest, if any, is the global state (``critics.inputs.CriticInputs``, ``state_path``), which only
the own path reads.
"""

from __future__ import annotations

from typing import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from perla_jax.networks.layers import ACTIVATIONS, MLP, dense, dense_at, pre_activation


def pool_others(rows: chex.Array, axis: int = -2) -> chex.Array:
    """Per-agent rows ``[..., N, R]`` (agents on ``axis``) -> for each agent i the mean of the others' rows
    ``[..., N(i), R]`` (zeros for a single agent)."""
    n = rows.shape[axis]
    return (rows.sum(axis=axis, keepdims=True) - rows) / max(n - 1, 1)


def attention_weights(queries: chex.Array, keys: chex.Array) -> chex.Array:
    """Scaled dot-product weights of each agent i over the others: ``queries, keys [..., N, D]`` ->
    ``[..., N(i), N(j)]``, rows summing to 1 over j != i (the diagonal is 0; all zeros for a single agent)."""
    n, d = queries.shape[-2], queries.shape[-1]
    if n == 1:
        return jnp.zeros((*queries.shape[:-1], 1))
    logits = jnp.einsum("...id,...jd->...ij", queries, keys) / jnp.sqrt(d)
    others = ~jnp.eye(n, dtype=bool)
    weights = jax.nn.softmax(jnp.where(others, logits, -jnp.inf), axis=-1, where=others)
    return jnp.where(others, weights, 0.0)


def gather_rows(table: chex.Array, joint_actions: chex.Array, agent_major: bool = False) -> chex.Array:
    """Each agent's row at its action: ``table [..., N, A, R]``, ``joint_actions [..., K, N]`` (ints) ->
    ``[..., K, N, R]``, or ``[..., N, K, R]`` with ``agent_major`` (the table's leading axes broadcast against the
    samples'). A one-hot contraction: its gradient is another contraction, where a gather's is a scatter-add
    (slower on CPU)."""
    one_hot = jax.nn.one_hot(joint_actions, table.shape[-2], dtype=table.dtype)  # [..., K, N, A]
    return jnp.einsum("...kna,...nar->...nkr" if agent_major else "...kna,...nar->...knr", one_hot, table)


class _FactoredPaths(nn.Module):
    """The parts both action kinds share: the own path, the pool over the others and the projection W."""

    hidden: Sequence[int]
    activation: str
    agent_dim: int
    rank: int
    pool: str  # "mean" over j != i, or "attention" weights from the agents' own parts (see ``pool_rows``)
    decentralised: bool = False  # what agent j shows the others: see ``others_view``

    def setup(self) -> None:
        self.own_layers = [dense(h) for h in self.hidden]
        self.pool_in = dense(self.hidden[-1], use_bias=False)
        if self.pool == "attention":
            self.query = dense(self.rank)
            self.key = dense(self.rank, 0.0)  # zero keys: uniform weights, so attention starts as the mean pool

    def pool_rows(self, features: chex.Array, rows: chex.Array, axis: int = -2) -> chex.Array:
        """The others' rows pooled for each agent: ``[..., K, N, R]`` -> ``[..., K, N(i), R]`` (``axis=-2``), or
        agent-major ``[..., N, K, R]`` -> ``[..., N(i), K, R]`` (``axis=-3``). Attention weights come from the
        agents' own parts (observation, id), not their actions, so the K samples share them and a sample still
        costs one weighted sum (MAAC's attention critic weights the others' encodings likewise, there with the
        actions in the keys)."""
        if self.pool == "mean":
            return pool_others(rows, axis)
        agent = self.others_view(features)
        weights = attention_weights(self.query(agent), self.key(agent))  # [..., N, N]
        return jnp.einsum("...ij,...kjr->...kir" if axis == -2 else "...ij,...jkr->...ikr", weights, rows)

    def others_view(self, features: chex.Array) -> chex.Array:
        """What phi and the attention read of every agent j, ``[..., N, D]``: its own part (observation, time left,
        id) for a centralised critic; for a decentralised one (perla_ippo) only its one-hot id, so that agent i's
        critic conditions on its own observation and the others' actions, never on their observations."""
        if not self.decentralised:
            return features[..., : self.agent_dim]
        n = features.shape[-2]
        return jnp.broadcast_to(jnp.eye(n, dtype=features.dtype), (*features.shape[:-1], n))

    def own(self, features: chex.Array) -> chex.Array:
        """``[..., N, F]`` -> the own path's pre-activation of the last hidden layer ``[..., N, H]``."""
        return pre_activation(self.own_layers, self.activation, features)

    def pooled(self, pool: chex.Array) -> chex.Array:
        return self.pool_in(pool)


class FactoredQCritic(nn.Module):
    """Discrete actions: ``__call__(features [..., N, F], joint_actions [..., N]) -> Q [..., N, A]`` over own
    actions (agent i's own entry of ``joint_actions`` is ignored), with the interface of ``QCritic`` that the
    marginalisation uses (``hidden_samples``, ``output``, ``output_at``)."""

    num_agents: int
    num_actions: int
    hidden: Sequence[int]
    activation: str = "tanh"
    agent_dim: int = 0
    rank: int = 16
    others_scale: float = 0.0
    out_scale: float = 1.0
    pool: str = "mean"
    decentralised: bool = False  # perla_ippo: phi sees the others' ids, not their observations

    def setup(self) -> None:
        self.paths = _FactoredPaths(self.hidden, self.activation, self.agent_dim, self.rank, self.pool,
                                    self.decentralised)
        # phi: every action's row at once, [..., N, A*R]; scale 0 starts it at zero.
        self.phi = MLP(self.hidden[:-1], self.num_actions * self.rank, self.others_scale, self.activation)
        self.out = dense(self.num_actions, self.out_scale)

    def others_table(self, features: chex.Array) -> chex.Array:
        """``[..., N, F]`` -> phi of every agent at every action ``[..., N, A, R]``."""
        rows = self.phi(self.paths.others_view(features))
        return rows.reshape(*rows.shape[:-1], self.num_actions, self.rank)

    def hidden_samples(self, features: chex.Array, joint_samples: chex.Array) -> chex.Array:
        """``features [..., N, F]``, ``joint_samples [..., K, N]`` -> last hidden layer ``[..., N, K, H]``."""
        act = ACTIVATIONS[self.activation]
        own = self.paths.own(features)[..., None, :]  # [..., N, 1, H], shared by the K samples
        table = self.others_table(features)  # [..., N, A, R]
        if joint_samples.shape[-2] > 1:
            # Gathered agent-major: the [..., N, K, H] batch is never transposed.
            rows = gather_rows(self.paths.pooled(table), joint_samples, agent_major=True)  # [..., N, K, H]
            return act(own + self.paths.pool_rows(features, rows, axis=-3))
        pool = self.paths.pool_rows(features, gather_rows(table, joint_samples))  # [..., K, N, R]
        # Agent-major before W: the transpose moves R-wide rows, not the H-wide per-sample batch.
        return act(own + self.paths.pooled(jnp.swapaxes(pool, -3, -2)))

    def output(self, hidden: chex.Array) -> chex.Array:
        return self.out(hidden)

    def output_at(self, hidden: chex.Array, actions: chex.Array) -> chex.Array:
        """Q at one own action per agent for every sample: ``hidden [..., K, H]``, ``actions [...]`` -> ``[..., K]``."""
        return dense_at(self.out.variables["params"], hidden, actions)

    def __call__(self, features: chex.Array, joint_actions: chex.Array) -> chex.Array:
        return self.output(self.hidden_samples(features, joint_actions[..., None, :])[..., 0, :])


class FactoredContinuousQ(nn.Module):
    """Box actions: ``__call__(features [..., N, F], joint [..., N, A]) -> Q [..., N]`` at the joint action,
    with ``q_samples`` for the marginal over K joint samples crossed with M own actions.

    phi(x_j, a_j) = dense_R(act(g(x_j) + B a_j)): g is computed once per state, each sampled action costs
    one A x H projection and one H x R layer per agent; the own action enters the head linearly (U a_i)."""

    num_agents: int
    action_dim: int
    hidden: Sequence[int]
    activation: str = "tanh"
    agent_dim: int = 0
    rank: int = 16
    others_scale: float = 0.0
    out_scale: float = 1.0
    pool: str = "mean"
    decentralised: bool = False  # perla_ippo: phi sees the others' ids, not their observations

    def setup(self) -> None:
        self.paths = _FactoredPaths(self.hidden, self.activation, self.agent_dim, self.rank, self.pool,
                                    self.decentralised)
        self.phi_state = [dense(h) for h in self.hidden[:-1]] + [dense(self.hidden[-1])]
        self.phi_action = dense(self.hidden[-1], use_bias=False)
        self.phi_out = dense(self.rank, self.others_scale)
        self.own_action = dense(self.hidden[-1], use_bias=False)
        self.out = dense(1, self.out_scale)

    def _phi_pre(self, features: chex.Array) -> chex.Array:
        return pre_activation(self.phi_state, self.activation, self.paths.others_view(features))  # [..., N, H]

    def q_samples(self, features: chex.Array, joint_samples: chex.Array, own_actions: chex.Array) -> chex.Array:
        """Q(s, a_i^(m), a_-i^(k)) ``[..., N, M, K]`` from ``features [..., N, F]``, ``joint_samples
        [..., K, N, A]`` (agent i's own slot ignored) and ``own_actions [..., N, M, A]``."""
        act = ACTIVATIONS[self.activation]
        # Agent-major from the input on: the transpose moves A-wide actions, never the H-wide per-sample batch.
        by_agent = jnp.swapaxes(joint_samples, -3, -2)  # [..., N, K, A]
        phi_pre = self._phi_pre(features)[..., None, :]  # [..., N, 1, H]
        rows = self.phi_out(act(phi_pre + self.phi_action(by_agent)))  # [..., N, K, R]
        others = self.paths.pooled(self.paths.pool_rows(features, rows, axis=-3))  # [..., N(i), K, H]
        own = self.paths.own(features)[..., :, None, None, :] + self.own_action(own_actions)[..., :, :, None, :]
        return self.out(act(own + others[..., :, None, :, :]))[..., 0]  # [..., N, M, K]

    def __call__(self, features: chex.Array, joint: chex.Array) -> chex.Array:
        return self.q_samples(features, joint[..., None, :, :], joint[..., :, None, :])[..., 0, 0]
