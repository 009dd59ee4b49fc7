"""The one exception type that reaches users as a one-line message, not a traceback."""


class GamerecError(Exception):
    """A problem with the user's input (params, files, folders) that they can fix.

    The message must name what is wrong (file, line, param key) and what was expected.
    Stage scripts print it as one line and exit with status 1; any other exception is a bug.
    """
