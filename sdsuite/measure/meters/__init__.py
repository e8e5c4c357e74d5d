"""Meters wrapped around each measured window: device clock, memory, FLOPs and energy."""
