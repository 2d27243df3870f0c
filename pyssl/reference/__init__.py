"""Plain eager PyTorch versions of every op: the ground truth of the tests, the baseline of the
benchmarks and the fallback path when no compiled backend can run. Written to be read."""
