"""NATS plumbing: identities and permissions, subjects, headers, connections, reply streams."""
