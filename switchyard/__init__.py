"""Switchyard: an OpenAI-compatible LLM gateway built as a pipeline of NATS workers.

Subpackages follow the request's path: ``ingress`` (HTTP edges) -> ``workers.head`` (routing)
-> JetStream -> ``workers.modelproxy`` (providers) -> reply. Layers, lowest first (DESIGN §2,
enforced by import-linter): ``errors``, ``schemas``, ``config``, ``dialects``, ``telemetry`` ->
``bus`` (NATS contract: identities, subjects, the envelope, the reply codec, clients of the
services) -> ``runtime`` (what every process stands on) -> ``client`` and ``limits`` -> the
components (``ingress``, ``workers.*``, ``secrets``, ``control``, ``admin``) -> ``apps``
(processes assembled from several components), ``serve``, ``stack`` (the local runtime) -> ``cli``.
"""

__version__ = "0.4.0"
