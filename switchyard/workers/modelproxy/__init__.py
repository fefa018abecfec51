"""The model-proxy worker: pull requests, call providers, stream replies."""
