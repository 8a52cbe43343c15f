"""Code that runs *inside* each system's virtual environment.

Why a separate package: the harness (``harness``) runs on any Python and imports
no database code, while this package is put on ``PYTHONPATH`` of a venv python
and imports exactly one system (Durus API or ZODB).  Every workload runs in its
own fresh process, started as ``python -m bench_driver ...``.
"""
