# The same commands the README shows.

# run the whole platform locally (Ctrl-C stops it)
up:
    switchyard up

# run the test suite (real nats-server, OpenBao and Valkey on free loopback ports)
test:
    pytest

# lint, format check and strict typing
check:
    ruff check .
    ruff format --check .
    mypy

# overhead versus calling the provider directly, and CPU per request
bench:
    python -m bench
