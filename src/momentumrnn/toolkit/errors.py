"""The one error type of the toolkit: a user mistake, reported as one line and exit code 2."""


class ToolkitError(Exception):
    """A bad input (recipe, option, path, data file, checkpoint...).

    The message says what was wrong and what to do; ``momentumrnn`` prints it as
    ``error: <message>`` on stderr and exits with code 2, without a traceback.
    """
