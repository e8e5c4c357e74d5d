"""Measuring one case: the runner, the grid engine, meters, profiling spans, calibration, device and environment
info."""
