"""The CLI's one error type: a one-line message for the user, exit code 2."""


class CliError(Exception):
    """Bad input or an unreachable component: printed as one line, exit code 2, no traceback."""

    exit_code = 2
