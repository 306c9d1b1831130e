"""Benchmark harness: Aiki vs DBOS on the same workloads, the same database and the same machine.

`python -m bench` runs every scenario for each system in its own subprocess (see `bench.run_one`)
and prints a comparison table; `bench/README.md` describes the scenarios.
"""
