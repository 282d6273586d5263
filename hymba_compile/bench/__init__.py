"""Benchmarks behind `python -m hymba_compile bench ...`: ratios against eager PyTorch measured
in the same run, and the fraction of the machine's measured limits."""
