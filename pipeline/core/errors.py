"""The one exception type for errors a user can cause (bad path, corrupt file, wrong option)."""


class StarError(Exception):
    """A problem with the user's input or environment; the message says what and what to do.

    The CLI prints it on one line and exits non-zero; library callers can catch it.
    """
