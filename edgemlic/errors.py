"""The one exception family for problems a user can fix."""


class EdgemlicError(Exception):
    """A problem with the user's input or environment; the message names it and says what to do.

    The CLI prints it on one line and exits 1, without a traceback.
    """
