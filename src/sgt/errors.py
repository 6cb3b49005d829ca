"""The one exception type that means "the user asked for something we cannot do".

The CLI turns it into a single line on stderr and exit code 2 (no traceback); library callers can
catch it like any other exception. Messages say what is wrong AND how to fix it.
"""


class UserError(Exception):
    """A problem with the user's input, config or files (not a bug in sgt)."""



def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors can be pages long)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
