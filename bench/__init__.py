"""Benchmarks: `python -m bench` runs the scenarios and prints their figures."""
