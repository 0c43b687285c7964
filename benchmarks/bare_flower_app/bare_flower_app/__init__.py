"""Bare Flower FedAvg app (Message API) used as the baseline of benchmarks/sim_overhead.py."""
