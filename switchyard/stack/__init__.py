"""The local runtime: certificates, server configs, provisioning, the `up` supervisor."""
