"""The management side: the ``/admin/v1`` API, the admin web app, client keys, spend, the token.

Served from the CLIENT zone by the gateway process (:mod:`switchyard.apps.gateway`), it reaches
the server zone only through the admin-only exports (``secrets.v1.admin``, ``control.v1.admin``)
and the client-key bucket, as the CLI does.
"""
