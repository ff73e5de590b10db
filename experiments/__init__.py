"""Entry points and studies over the ``perla_jax`` package: run.py (training), evaluate.py, plot.py, the study
suite (studies.py, suite.py, suite_figures.py, reporting.py) and the benchmarks (bench.py, bench_device.py,
profile_step.py, jaxmarl_baseline.py, revision_check.py, jax_hang_check.py).

Each script runs as ``python experiments/<name>.py`` or ``python -m experiments.<name>`` from the repository
root, and the modules import as ``from experiments import suite``; none of it is installed with the package.
"""
