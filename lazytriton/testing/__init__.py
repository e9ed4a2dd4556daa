"""Models and data shared by lazytriton's tests, examples and benchmarks."""
