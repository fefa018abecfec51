"""Switchyard: an OpenAI-compatible LLM gateway built as a pipeline of NATS workers.

Subpackages follow the request's path: ``ingress`` (HTTP edges) -> ``workers.head`` (routing)
-> JetStream -> ``workers.modelproxy`` (providers) -> reply; ``secrets`` keeps provider keys in
Vault/OpenBao; ``bus`` is the NATS plumbing; ``schemas`` the wire types; ``stack`` the local
runtime; ``admin`` the management app.
"""

__version__ = "0.1.0"
