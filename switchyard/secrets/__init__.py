"""The secrets service (the only Vault/OpenBao client), its NATS client, and the Secret type."""
