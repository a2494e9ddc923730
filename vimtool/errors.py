"""One exception type for mistakes a user can fix.

The CLI turns a `VimtoolError` into a one-line `error: ...` on stderr and exit code 2; anything else is a bug
and keeps its traceback. Messages say what is wrong *and* what to do about it.
"""


class VimtoolError(Exception):
    """A user-fixable problem (bad input, missing file, wrong option). Message: one line, with the fix."""
