"""Measuring on a device: the unit pool, checkpoints, the profiler, static footprint, the memory probe."""
