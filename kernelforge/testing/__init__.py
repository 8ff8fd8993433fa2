"""Helpers shared by the test suite and the benchmarks (browser launching); not part of the inference path."""
