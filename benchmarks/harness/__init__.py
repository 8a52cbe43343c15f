"""The benchmark harness: builds the venvs, runs the workloads, reports.

It runs on any Python >= 3.10 with the standard library only; everything that
imports a database runs in ``bench_driver`` inside a system's venv.
"""
