"""The policy core: requests and LLM runtimes, KV block pool, SM units, memory, placement,
clock-free mesh schedulers, the strategy registry, scheduler settings, per-request records, and
the run spec and driver glue both drivers share (layer 1: imports catalog and schema only)."""
