"""The agent-factored Q-critics (networks/factored.py): the K-sample marginal of the gathered, pooled form equals the
definition written out from the parameters, the others' part starts at zero, and Config chooses and refuses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perla_jax import Config, make_env, marginal_q_head, marginalise
from perla_jax.agents import Agents
from perla_jax.critics import make_critic
from perla_jax.networks.factored import FactoredContinuousQ, FactoredQCritic, attention_weights

N, A, R, F_AGENT, F_STATE = 4, 5, 3, 6, 7


def _dense(p, x):
    return x @ p["kernel"] + p.get("bias", 0.0)


def _reference_weights(params, features, i):
    """Agent i's pooling weights over the agents ``[N]``: the mean over j != i, or with attention parameters the
    softmax over j != i of q_i . k_j / sqrt(R), q and k dense layers on the agents' own parts."""
    p = params["params"]["paths"]
    others = (jnp.arange(N) != i).astype(jnp.float32)  # i may be traced (marginalise vmaps over it)
    if "query" not in p:
        return others / (N - 1)
    agent = features[:, :F_AGENT]
    logits = _dense(p["key"], agent) @ _dense(p["query"], agent[i]) / np.sqrt(R)
    weights = jnp.exp(logits - logits.max()) * others
    return weights / weights.sum()


def _reference_q(params, features, joint, i):
    """Agent i's Q over own actions ``[A]`` at the joint action ``joint [N]``, from the module docstring's formula:
    out(tanh(own(x_i) + W sum_{j != i} w_ij phi(x_j)[a_j])), w_ij the mean's 1/(N-1) or attention weights."""
    p = params["params"]
    x = features[i]  # the own path reads agent i's whole input (with the state where it is there)
    own = _dense(p["paths"]["own_layers_1"], jnp.tanh(_dense(p["paths"]["own_layers_0"], x)))
    phi = _dense(p["phi"]["Dense_1"], jnp.tanh(_dense(p["phi"]["Dense_0"], features[:, :F_AGENT])))  # [N, A*R]
    rows = phi.reshape(N, A, R)[jnp.arange(N), joint]  # [N, R]: each agent's row at its action
    pooled = (rows * _reference_weights(params, features, i)[:, None]).sum(axis=0) @ p["paths"]["pool_in"]["kernel"]
    return _dense(p["out"], jnp.tanh(own + pooled))


def _perturb_keys(params):
    """Attention keys start at zero (uniform weights); random ones make the weights differ from the mean's."""
    key = params["params"]["paths"]["key"]
    noisy = jax.tree.map(lambda x: jax.random.normal(jax.random.PRNGKey(9), x.shape), key)
    return {"params": {**params["params"], "paths": {**params["params"]["paths"], "key": noisy}}}


@pytest.mark.parametrize("with_state, pool", [(True, "mean"), (False, "mean"), (False, "attention")])
def test_discrete_marginal_equals_the_definition(with_state, pool):
    """Q^_i(s, a) from the gathered table and the pool reused over K samples agrees with marginalise() over the
    written-out critic, for every own action; the per-sample variance at the taken actions too."""
    net = FactoredQCritic(N, A, (8, 6), "tanh", F_AGENT, R, others_scale=1.0, pool=pool)
    features = jax.random.normal(jax.random.PRNGKey(0), (N, F_AGENT + (F_STATE if with_state else 0)))
    params = net.init(jax.random.PRNGKey(1), features, jnp.zeros((N,), jnp.int32))
    if pool == "attention":
        params = _perturb_keys(params)
    samples = jax.random.randint(jax.random.PRNGKey(2), (9, N), 0, A)  # [K, N]
    q_fn = lambda i, joint: _reference_q(params, features, joint, i)[joint[i]]
    for a in range(A):
        own = jnp.full((N,), a)
        q_hat, q_var = marginal_q_head(net, params, features, samples, own)
        np.testing.assert_allclose(q_hat[:, a], marginalise(q_fn, own, samples), rtol=1e-5, atol=1e-6)
        per_sample = jnp.stack([jnp.stack([q_fn(i, s.at[i].set(a)) for i in range(N)]) for s in samples])  # [K, N]
        np.testing.assert_allclose(q_var, per_sample.var(axis=0, ddof=1), rtol=1e-4, atol=1e-9)
    assert np.all(np.asarray(q_var) > 0)
    # One joint action (the epochs' forward) applies W after the pool, K > 1 samples to the table before the
    # gather: both are the definition.
    at_joint = net.apply(params, features, samples[0])  # [N, A]
    reference = jnp.stack([_reference_q(params, features, samples[0], i) for i in range(N)])
    np.testing.assert_allclose(at_joint, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("algo, state_path, with_state", [("perla_mappo", True, True), ("perla_mappo", False, False),
                                                         ("perla_ippo", True, False)])
def test_the_state_joins_the_input_only_through_the_state_path(algo, state_path, with_state):
    """Factored layout: each agent's observation and id first (phi reads those), then the global state only for a
    centralised critic with the state path; without it the state is never built into the input."""
    cfg = Config(algo=algo, critic_state_path=state_path, num_envs=2, num_steps=4, total_timesteps=8,
                 num_minibatches=1)
    env = make_env(cfg.env)
    inputs = make_critic(cfg, env, Agents.build(cfg, env)).inputs
    obs = jax.random.normal(jax.random.PRNGKey(0), (env.num_agents, env.obs_dim))
    state = jax.random.normal(jax.random.PRNGKey(1), (env.state_dim,))
    features = inputs.features(obs, state)
    assert inputs.agent_dim == env.obs_dim + env.num_agents
    assert features.shape == (env.num_agents, inputs.agent_dim + (env.state_dim if with_state else 0))
    np.testing.assert_array_equal(features[:, : env.obs_dim], obs)
    np.testing.assert_array_equal(features[:, env.obs_dim : inputs.agent_dim], np.eye(env.num_agents))
    if with_state:
        np.testing.assert_array_equal(features[:, inputs.agent_dim :], np.broadcast_to(state, (env.num_agents,
                                                                                               env.state_dim)))


def test_untrained_critic_ignores_the_others_actions():
    """critic_others_scale = 0 (default): phi's output layer starts at zero, so Q does not move with a_-i."""
    cfg = Config(algo="perla_mappo", num_envs=2, num_steps=4, total_timesteps=8, num_minibatches=1)
    env = make_env(cfg.env)
    critic = make_critic(cfg, env, Agents.build(cfg, env))
    assert isinstance(critic.network, FactoredQCritic)
    params = critic.init(jax.random.PRNGKey(0))
    obs = jax.random.normal(jax.random.PRNGKey(1), (env.num_agents, env.obs_dim))
    features = critic.inputs.features(obs, obs.reshape(-1))
    joints = jax.random.randint(jax.random.PRNGKey(2), (6, env.num_agents), 0, env.num_actions)
    q = jax.vmap(lambda j: critic.network.apply(params, features, j))(joints)  # [6, N, A]
    np.testing.assert_allclose(q, jnp.broadcast_to(q[0], q.shape), atol=1e-7)
    assert float(jnp.std(q[0])) > 0  # it does depend on the own action and the state


def _continuous_reference(params, features, joint, own_action, i):
    p = params["params"]
    x = features[i]
    own = _dense(p["paths"]["own_layers_1"], jnp.tanh(_dense(p["paths"]["own_layers_0"], x)))
    own = own + own_action @ p["own_action"]["kernel"]
    g = _dense(p["phi_state_1"], jnp.tanh(_dense(p["phi_state_0"], features[:, :F_AGENT])))  # [N, H]
    rows = _dense(p["phi_out"], jnp.tanh(g + joint @ p["phi_action"]["kernel"]))  # [N, R]
    pooled = (rows * _reference_weights(params, features, i)[:, None]).sum(axis=0) @ p["paths"]["pool_in"]["kernel"]
    return _dense(p["out"], jnp.tanh(own + pooled))[0]


@pytest.mark.parametrize("pool", ["mean", "attention"])
def test_continuous_samples_equal_the_definition(pool):
    """q_samples over K joint samples crossed with M own actions equals the written-out critic per (i, m, k)."""
    a_dim, k, m = 2, 3, 2
    net = FactoredContinuousQ(N, a_dim, (8, 6), "tanh", F_AGENT, R, others_scale=1.0, pool=pool)
    features = jax.random.normal(jax.random.PRNGKey(0), (N, F_AGENT + F_STATE))
    params = net.init(jax.random.PRNGKey(1), features, jnp.zeros((N, a_dim)))
    if pool == "attention":
        params = _perturb_keys(params)
    joint = jax.random.normal(jax.random.PRNGKey(2), (k, N, a_dim))
    own = jax.random.normal(jax.random.PRNGKey(3), (N, m, a_dim))
    got = net.apply(params, features, joint, own, method="q_samples")  # [N, M, K]
    assert got.shape == (N, m, k)
    for i in range(N):
        for mi in range(m):
            for ki in range(k):
                want = _continuous_reference(params, features, joint[ki], own[i, mi], i)
                np.testing.assert_allclose(got[i, mi, ki], want, rtol=1e-5, atol=1e-6)
    # __call__ at a joint action is the one-sample case with the own slot's action
    at_joint = net.apply(params, features, joint[0])
    want = [_continuous_reference(params, features, joint[0], joint[0, i], i) for i in range(N)]
    np.testing.assert_allclose(at_joint, want, rtol=1e-5, atol=1e-6)


def test_attention_starts_as_the_mean_and_weights_only_the_others():
    queries = jax.random.normal(jax.random.PRNGKey(0), (N, R))
    keys = jax.random.normal(jax.random.PRNGKey(1), (N, R))
    weights = np.asarray(attention_weights(queries, keys))
    np.testing.assert_allclose(np.diag(weights), 0.0)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
    logits = np.asarray(queries @ keys.T) / np.sqrt(R)
    row = np.exp(logits[0, 1:] - logits[0, 1:].max())
    np.testing.assert_allclose(weights[0, 1:], row / row.sum(), rtol=1e-5)
    # zero keys (the initialisation): the mean over the others
    np.testing.assert_allclose(attention_weights(queries, jnp.zeros_like(keys)), (1 - np.eye(N)) / (N - 1), rtol=1e-6)
    net = FactoredQCritic(N, A, (8, 6), "tanh", F_AGENT, R, others_scale=1.0, pool="attention")
    features = jax.random.normal(jax.random.PRNGKey(0), (N, F_AGENT + F_STATE))
    params = net.init(jax.random.PRNGKey(1), features, jnp.zeros((N,), jnp.int32))
    joint = jnp.array([0, 3, 1, 4])
    without_attention = {"params": {**params["params"], "paths": {
        name: value for name, value in params["params"]["paths"].items() if name not in ("query", "key")}}}
    mean_net = FactoredQCritic(N, A, (8, 6), "tanh", F_AGENT, R, others_scale=1.0)
    np.testing.assert_allclose(net.apply(params, features, joint), mean_net.apply(without_attention, features, joint),
                               rtol=1e-5, atol=1e-6)


def test_critic_arch_choice_and_refusals():
    assert Config(algo="perla_mappo").critic_arch == "factored"
    assert Config(algo="perla_ippo", critic_arch="mlp").critic_arch == "mlp"
    assert Config(algo="mappo").critic_arch == ""
    with pytest.raises(ValueError, match=r"critic_arch='mlp' does not apply to algo='mappo'.*perla_mappo, perla_ippo"):
        Config(algo="mappo", critic_arch="mlp")
    with pytest.raises(ValueError, match=r"critic_arch='factored' does not apply to algo='ippo'"):
        Config(algo="ippo", critic_arch="factored")
    with pytest.raises(ValueError, match=r"critic_arch='attention' is invalid: allowed are factored, mlp"):
        Config(algo="perla_mappo", critic_arch="attention")
    with pytest.raises(ValueError, match=r"critic_pool='max' is invalid: allowed are mean, attention"):
        Config(critic_pool="max")
    with pytest.raises(ValueError, match=r"critic_rank=0 is invalid"):
        Config(critic_rank=0)
    with pytest.raises(ValueError, match=r"critic_out_scale=-1.0 is invalid"):
        Config(critic_out_scale=-1.0)


@pytest.mark.parametrize("network", ["ff", "rnn"])
@pytest.mark.parametrize("pool", ["mean", "attention"])
def test_a_decentralised_critic_never_reads_the_others_observations(network, pool):
    """perla_ippo: agent i's Q moves with its own observation and the others' actions, not with their observations
    (phi and the attention see only their ids); perla_mappo's does move with them."""
    moved = {}
    for algo in ("perla_ippo", "perla_mappo"):
        cfg = Config(algo=algo, network=network, critic_pool=pool, critic_others_scale=1.0, num_envs=2, num_steps=4,
                     total_timesteps=8, num_minibatches=1)
        env = make_env(cfg.env)
        critic = make_critic(cfg, env, Agents.build(cfg, env))
        params = critic.init(jax.random.PRNGKey(0))
        if pool == "attention":
            params = jax.tree_util.tree_map_with_path(
                lambda path, x: jax.random.normal(jax.random.PRNGKey(9), x.shape)
                if "key" in jax.tree_util.keystr(path) else x, params)
        obs = jax.random.normal(jax.random.PRNGKey(1), (1, 1, env.num_agents, env.obs_dim))  # [T, E, N, O]
        others_moved = obs.at[..., 1:, :].add(1.0)  # every agent but agent 0
        joint = jnp.array([[[1, 2, 3]]])

        def q(o):
            head, inputs = critic.inputs.sequence(params, critic.inputs.initial_carry((1,)), o, o.reshape(1, 1, -1),
                                                  jnp.ones((1, 1), bool))
            return critic.network.apply(head, inputs, joint)[..., 0, :]  # agent 0's Q over its actions

        assert float(jnp.abs(q(obs) - q(obs.at[..., 0, :].add(1.0))).max()) > 1e-4  # its own observation counts
        with_others = critic.network.apply(params if network == "ff" else params["head"],
                                           critic.inputs.sequence(params, critic.inputs.initial_carry((1,)), obs,
                                                                  obs.reshape(1, 1, -1), jnp.ones((1, 1), bool))[1],
                                           jnp.array([[[1, 4, 0]]]))[..., 0, :]
        assert float(jnp.abs(q(obs) - with_others).max()) > 1e-4  # the others' actions count
        moved[algo] = float(jnp.abs(q(obs) - q(others_moved)).max())
    assert moved["perla_ippo"] == 0.0 and moved["perla_mappo"] > 1e-4
