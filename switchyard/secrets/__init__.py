"""The secrets service: the only Vault/OpenBao client, and its CLI.

Model-proxies read keys through :mod:`switchyard.runtime.secret_cache`; admins manage them
through :mod:`switchyard.bus.secrets_admin`; values are :class:`switchyard.schemas.secret.Secret`.
"""
