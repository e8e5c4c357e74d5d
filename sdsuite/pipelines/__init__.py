"""Model variants, schedulers and the lazily built, cached pipelines."""
