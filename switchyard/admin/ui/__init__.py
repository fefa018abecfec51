"""The admin web app (``/ui/``): server-rendered pages, a little first-party JavaScript for the
live parts and charts, no build step and nothing loaded from elsewhere. It talks to the platform
only through the admin clients the management API uses (:class:`~switchyard.admin.context.
AdminContext`)."""

from switchyard.admin.ui.app import AdminUi

__all__ = ["AdminUi"]
