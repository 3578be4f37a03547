"""The project's error classes.

`ToolkitError` is the base of every error that means bad or missing input (a params key, a data
file, a record, a model that is not there): a command prints its message as one `error:` line and
exits 2. Anything else that escapes a command is a bug: the traceback is printed and the exit code
is 70. Each message names the file, row, record or parameter and what to do.
"""


class ToolkitError(Exception):
    """Bad or missing input; the message names what is wrong and the fix."""


class EvidenceError(ToolkitError):
    """A record is missing, malformed, or does not match its hash."""


class MissingRecord(EvidenceError):
    pass


class MissingValue(EvidenceError):
    pass
