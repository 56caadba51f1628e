"""Heap numbers for the monitoring a fleet already runs: Prometheus metrics and pprof
profiles, from outside the process."""
