"""The NATS contract: identities and permissions, subjects, header names, the typed request
envelope and the reply codec, TLS files, connections, and the callers' side of the admin
services (secrets, control)."""
