"""One exception type for every user-facing problem.

The CLI prints `error: <message>` on one line and exits with status 2, so every message must name
the file, line or field at fault and what is expected instead.
"""


class PersonaguardError(Exception):
    """A problem the user can fix (bad config, bad data, missing model)."""
