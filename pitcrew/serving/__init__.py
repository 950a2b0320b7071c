"""Serving side of pitcrew: Triton model configs, atomic publishing and the hot-swap protocol (DESIGN.md §4–§5).

Pure Python over ``tritonclient``; no Airflow import, so the CLI, the Airflow hook and benchmarks share it.
"""
