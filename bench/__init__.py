"""`make bench`: how many real-time beds the detector sustains (a benchmark, not a test)."""
