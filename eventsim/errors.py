"""One exception type for every problem a user can fix.

The CLI prints its message as a single line and exits non-zero; library callers
catch it like any other exception. Messages name the file, tensor, PE or field.
"""


class EventsimError(Exception):
    """A user-facing error: bad input, a model that does not fit, a bad chip file."""
