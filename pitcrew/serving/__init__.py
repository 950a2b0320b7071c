"""Serving side of pitcrew: Triton model configs, atomic publishing and the hot-swap protocol (docs/design.md, "Serving" and "Hot-swap").

Pure Python over ``tritonclient``; no Airflow import, so the CLI, the Airflow hook and benchmarks share it.
"""
