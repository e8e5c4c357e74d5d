"""The GPU: telemetry backends (NVML, simulated), energy windows, clock locking and its journal, frequency specs."""
