"""latency layer."""
