"""sdsuite: benchmark and validation suite for Stable Diffusion inference speed, memory and GPU energy."""

__version__ = "0.1.0"
