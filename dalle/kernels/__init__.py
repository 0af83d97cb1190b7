"""Native XLA:CPU kernels for the few places where XLA's own are far from the machine's limits."""
