"""End-to-end benchmark of Switchyard against a fake OpenAI upstream (``python -m bench``).

Everything runs on this machine in one go: an nginx upstream that answers with fixed bodies, a
full local Switchyard stack, ``wrk`` for load and a small Python client for time-to-first-token.
Each scenario is measured twice, directly against nginx and through Switchyard, so the
difference is Switchyard's overhead on the same hardware at the same moment.
"""
