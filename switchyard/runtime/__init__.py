"""What every Switchyard process stands on.

Worker lifecycle (:mod:`.worker`) and the health/ready/metrics endpoint (:mod:`.health`); one
task supervisor (:mod:`.tasks`); following KV buckets (:mod:`.kvwatch`); the pull consumer
(:mod:`.puller`) and the acknowledged publisher (:mod:`.jetstream`); the definitions of streams,
consumers and buckets (:mod:`.definitions`); the NATS micro-service error boundary
(:mod:`.endpoints`); shared cooldown state (:mod:`.cooldowns`); HTTP error responses
(:mod:`.http`); the audit actor of admin requests (:mod:`.audit`); warnings at most once in a
while (:mod:`.throttle`); a request-reply caller's view of its answer stream
(:mod:`.reply_wait`); the scheme and host a client used behind a reverse proxy
(:mod:`.forwarded`), and the client's address behind trusted proxies (:mod:`.client_address`).
"""
