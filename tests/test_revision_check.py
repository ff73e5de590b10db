"""experiments/revision_check.py: how a fingerprint's metrics moved between two revisions."""

from programs import load_script

revision_check = load_script("revision_check", "experiments/revision_check.py")


def test_largest_metric_gap_names_the_metric_that_moved_most_relative_to_its_size():
    before = {"return": [-20.0, -10.0], "critic_loss": [0.5, 0.25], "pg_var": [float("nan"), 1.0]}
    after = {"return": [-20.0, -10.001], "critic_loss": [0.5, 0.2505], "pg_var": [float("nan"), 1.0]}
    # return: 0.001 of 20 (5e-5); critic_loss: 0.0005 of 0.5 (1e-3); pg_var: unchanged, its NaNs equal.
    assert revision_check.largest_metric_gap(before, after) == "(largest metric change: critic_loss, 1.0e-03 of its size)"
    nan_appeared = {**after, "pg_var": [float("nan"), float("nan")]}
    assert "pg_var, inf" in revision_check.largest_metric_gap(before, nan_appeared)
