"""The one root of every error mirror-router raises on purpose.

Subclasses live beside the code that raises them (``config.ConfigError``,
``dns.wire.QueryError``, ...); the edges translate them in one mapping each.
"""


class RouterError(Exception):
    """Base class of mirror-router's own errors."""
