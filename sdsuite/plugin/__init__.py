"""The pytest plugin: hooks and fixtures (``hooks``), the baseline gate's hooks (``baseline_hooks``), hook specs."""
