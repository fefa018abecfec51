# The same commands the README shows.

# run the whole platform locally (Ctrl-C stops it)
up:
    switchyard up

# run the test suite (real nats-server, OpenBao and Valkey on free loopback ports)
test:
    pytest

# only the pure-logic tier: seconds, no servers
unit:
    pytest -m unit

# lint, format check, strict typing and the layer contract
check:
    ruff check .
    ruff format --check .
    mypy
    lint-imports

# overhead versus calling the provider directly, and CPU per request
bench:
    python -m bench
