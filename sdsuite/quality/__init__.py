"""Image quality: fidelity against a reference, sanity checks, distribution metrics, acceptance windows, option
effects."""
