"""The one error type users see: a message that names the file, key, row or sample at fault."""


class KitError(RuntimeError):
    """A problem with the user's inputs or environment. The CLI prints it without a traceback."""
