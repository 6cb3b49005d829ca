"""The exceptions that mean "the user asked for something we cannot do" (and what a run left undone).

The CLI turns them into a single line on stderr and an exit code (no traceback); library callers can
catch them like any other exception. Messages say what is wrong AND how to fix it.
"""


class UserError(Exception):
    """A problem with the user's input, config or files (not a bug in sgt): exit code 2."""

    exit_code = 2


class TrainingDiverged(UserError):
    """A training stage produced a non-finite loss or non-finite weights (usually a too large learning
    rate). Its messages start with PREFIX, which is how a stage run under a launcher is recognised."""

    PREFIX = "training diverged: "

    def __init__(self, message: str):
        super().__init__(message if message.startswith(self.PREFIX) else self.PREFIX + message)


class IncompleteRun(UserError):
    """The work is done and saved but some results are missing (failed judge calls, diverged attack
    cells): exit code 1, so that scripts can tell it from bad input (2)."""

    exit_code = 1


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors can be pages long)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
