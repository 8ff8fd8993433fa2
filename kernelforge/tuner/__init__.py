"""How kernels are made fast: search space, objective, measurement, strategies and the tuning database."""
