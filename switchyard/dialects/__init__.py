"""Client dialects other than chat completions, translated to and from chat completions.

Clients speak the OpenAI Responses API (:mod:`switchyard.dialects.responses`) and Anthropic's
Messages API (:mod:`switchyard.dialects.anthropic`); most providers speak chat completions. The
translations here are pure (bytes or dicts in, bytes or dicts out: no NATS, no HTTP) so the edges
and the model-proxy can call them wherever a request or reply crosses from one dialect to the
other. :mod:`switchyard.dialects.usage` reads token usage out of the native dialects' bodies and
streams for providers that speak them and get the request passed through, and
:mod:`switchyard.dialects.probes` validates the few request fields routing needs.

This package sits just above ``errors`` and ``schemas`` and imports nothing else of Switchyard.
"""
