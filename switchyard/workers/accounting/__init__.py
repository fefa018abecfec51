"""The accounting worker: usage events to spend counters."""
