"""mirror-router: one steering core behind an authoritative GeoDNS server and an HTTP redirector."""

__version__ = "0.1.0"
