"""experiments/revision_check.py: how a fingerprint's metrics moved between two revisions."""

import pytest
from programs import load_script

revision_check = load_script("revision_check", "experiments/revision_check.py")


def test_largest_metric_gap_names_the_metric_that_moved_most_relative_to_its_size():
    before = {"return": [-20.0, -10.0], "critic_loss": [0.5, 0.25], "pg_var": [float("nan"), 1.0]}
    after = {"return": [-20.0, -10.001], "critic_loss": [0.5, 0.2505], "pg_var": [float("nan"), 1.0]}
    # return: 0.001 of 20 (5e-5); critic_loss: 0.0005 of 0.5 (1e-3); pg_var: unchanged, its NaNs equal.
    assert revision_check.largest_metric_gap(before, after) == "(largest metric change: critic_loss, 1.0e-03 of its size)"
    nan_appeared = {**after, "pg_var": [float("nan"), float("nan")]}
    assert "pg_var, inf" in revision_check.largest_metric_gap(before, nan_appeared)


def test_speed_fields_put_the_given_fields_over_the_presets_and_name_an_unknown_preset():
    fields = revision_check.speed_fields({"env": "ant_4x2", "num_envs": 8}, "jaxmarl")
    assert (fields["env"], fields["num_envs"], fields["num_steps"], fields["critic_lr"]) == ("ant_4x2", 8, 300, 1e-3)
    assert revision_check.speed_fields({"k": 4}, None) == {"k": 4}
    with pytest.raises(ValueError, match="preset='nope'.*allowed are jaxmarl"):
        revision_check.speed_fields({}, "nope")
