"""Base of every error a user can cause and fix (bad file, column, value, name)."""


class PlatformError(Exception):
    """Raised with a message naming the file/column/value and what was expected."""
