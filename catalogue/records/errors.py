"""The catalogue's two errors, defined once: every module that raises or catches them imports them from here."""


class CatalogueError(ValueError):
    """A catalogue that cannot be used as asked (newer schema, another model, bad rows), or a decision that does
    not fit the log or its own rules; nothing was written."""


class Conflict(CatalogueError):
    """A decision refused because the log moved on since the reviewer looked (or it would duplicate a whale)."""
