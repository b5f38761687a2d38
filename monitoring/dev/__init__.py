"""Developer tooling: the local broker, the load generator, local deployments (tests,
benchmarks, the demo)."""
