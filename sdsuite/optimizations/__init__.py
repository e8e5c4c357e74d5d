"""The optimization axis: option sets and presets, support checks, attention and K/V cache, quantization, apply."""
