"""Config validation: every bad value names the field, the value and what is allowed."""

import pytest

from perla_jax import AlgoSpec, Config, make_env, make_trainer, resolve_env_name


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"k": 0}, ["k=0", ">= 1"]),
        ({"k": 2.5}, ["k=2.5", "integer"]),
        ({"algo": "qmix"}, ["algo='qmix'", "perla_mappo", "mappo", "ippo"]),
        ({"advantage": "gae"}, ["advantage='gae'", "td", "sarsa", "perla_cv"]),
        ({"critic_action_layer": "middle"}, ["critic_action_layer='middle'", "first", "last"]),
        ({"eval_every": -1}, ["eval_every=-1", ">= 0"]),
        ({"eval_episodes": 0}, ["eval_episodes=0", ">= 1"]),
        ({"env": "atari"}, ["env='atari'", "unknown", "MPE_simple_spread_v3"]),
        ({"env": "MPE_simple_tag_v3"}, ["refused", "competitive"]),
        ({"env": "MPE_simple_push_v3"}, ["refused", "competitive"]),
        ({"num_minibatches": 3}, ["num_minibatches=3", "does not divide", "2048"]),
        ({"total_timesteps": 100}, ["total_timesteps=100", ">= 2048"]),
        ({"total_timesteps": 1.5}, ["total_timesteps=1.5", "whole number"]),
        ({"gamma": 1.5}, ["gamma=1.5", "[0.0, 1.0]"]),
        ({"actor_lr": 0.0}, ["actor_lr=0.0", "(0.0, inf)"]),
        ({"clip_eps": -1.0}, ["clip_eps=-1.0"]),
        ({"critic_hidden": ()}, ["critic_hidden=()", "positive ints"]),
        ({"activation": "gelu"}, ["activation='gelu'", "tanh", "relu"]),
        ({"num_seeds": 0}, ["num_seeds=0"]),
    ],
)
def test_bad_values_raise_naming_field_value_and_allowed(changes, words):
    with pytest.raises(ValueError) as err:
        Config(**changes)
    for w in words:
        assert w in str(err.value)


def test_defaults_follow_jaxmarl_ippo_ff_mpe():
    cfg = Config()
    assert (cfg.num_envs, cfg.num_steps, cfg.update_epochs, cfg.num_minibatches) == (16, 128, 4, 4)
    assert (cfg.gamma, cfg.gae_lambda, cfg.clip_eps, cfg.actor_lr) == (0.99, 0.95, 0.2, 2.5e-4)
    assert cfg.num_updates == 10_000_000 // 2048
    assert cfg.minibatch_size == 512


def test_float_timesteps_lists_and_round_trip():
    cfg = Config(total_timesteps=2e6, actor_hidden=[32, 32])
    assert cfg.total_timesteps == 2_000_000 and cfg.actor_hidden == (32, 32)
    assert Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown config fields \\['bogus'\\]"):
        Config.from_dict({**cfg.to_dict(), "bogus": 1})


def test_env_aliases_and_kwargs_pass_through():
    assert resolve_env_name("mpe") == "MPE_simple_spread_v3"
    env = make_env("mpe", {"num_agents": 4, "num_landmarks": 4})
    assert env.num_agents == 4 and env.obs_dim == 24 and env.num_actions == 5
    assert make_env("MPE_simple_reference_v3").num_actions == 50


def test_a_config_recorded_before_the_critic_options_reads_back_as_it_ran():
    """config.json files written before 2026-12-03 lack the critic options: they read back as the critic they
    trained with (the MLP Q-critic, output scale 1), not as today's defaults; their stored critic_lr is kept."""
    new_fields = ("critic_arch", "critic_rank", "critic_others_scale", "critic_state_path", "critic_pool",
                  "critic_out_scale")
    for algo, arch in (("perla_mappo", "mlp"), ("perla_ippo", "mlp"), ("mappo", ""), ("ippo", "")):
        old = {k: v for k, v in Config(algo=algo, critic_lr=2.5e-4).to_dict().items() if k not in new_fields}
        old.update(advantage="td", k=4)  # what the V-critics' runs recorded too, though they never read them
        cfg = Config.from_dict(old)
        q = algo.startswith("perla")
        # a V-critic's settings it never read come back at their defaults, the Q-critics' as they ran
        expected = (arch, 1.0, 2.5e-4, "td" if q else "perla_cv", 4 if q else 16)
        assert (cfg.critic_arch, cfg.critic_out_scale, cfg.critic_lr, cfg.advantage, cfg.k) == expected
        assert cfg.critic_pool == "mean" and cfg.critic_state_path is False


@pytest.mark.parametrize("fields, named, applies", [
    (dict(algo="mappo", k=4), "k=4", "Q-critics of perla_mappo, perla_ippo"),
    (dict(algo="ippo", advantage="td"), "advantage='td'", "Q-critics"),
    (dict(algo="mappo", critic_target="marginal"), "critic_target='marginal'", "Q-critics"),
    (dict(algo="ippo", critic_rank=8), "critic_rank=8", "Q-critics"),
    (dict(algo="perla_mappo", critic_action_layer="first"), "critic_action_layer='first'", "critic_arch='mlp'"),
    (dict(algo="perla_mappo", critic_arch="mlp", critic_pool="attention"), "critic_pool='attention'",
     "critic_arch='factored'"),
    (dict(algo="mappo", own_action_samples=8), "own_action_samples=8", "Q-critics"),
])
def test_a_setting_the_critic_never_reads_is_refused(fields, named, applies):
    with pytest.raises(ValueError, match="does nothing") as err:
        Config(**fields)
    assert named in str(err.value) and applies in str(err.value) and "default" in str(err.value)


def test_settings_that_apply_are_accepted():
    assert Config(algo="perla_mappo", critic_arch="mlp", critic_action_layer="first").critic_action_layer == "first"
    assert Config(algo="perla_mappo", critic_pool="attention", k=4).k == 4
    assert Config(algo="perla_mappo", env="ant_4x2", own_action_samples=8).own_action_samples == 8
    assert set(Config(algo="mappo").inapplicable()) >= {"k", "advantage", "critic_target", "critic_rank"}
    assert "k" not in Config(algo="perla_ippo").inapplicable()


def test_own_action_samples_with_discrete_actions_is_refused_where_the_env_is_known():
    with pytest.raises(ValueError, match="own_action_samples=8 does nothing with discrete actions"):
        make_trainer(Config(algo="perla_mappo", own_action_samples=8))


def test_an_algorithm_spec_names_a_known_critic():
    assert AlgoSpec(critic="q", centralised=True, agent_id_in_critic=True).critic == "q"
    with pytest.raises(ValueError, match="critic='w' is invalid: allowed are q, v"):
        AlgoSpec(critic="w", centralised=True, agent_id_in_critic=True)
