"""User-facing errors.

A :class:`KdcacheError` carries one line that says what is wrong and where (file, line, option).
The CLI prints it without a traceback and exits with status 2.
"""


class KdcacheError(Exception):
    """An error caused by input the user can fix (a file, an option, a cache)."""

    exit_code = 2


class IntegrityError(KdcacheError):
    """Stored data failed a check (checksum, completeness, provenance)."""

    exit_code = 1


def one_line(err: BaseException) -> str:
    """An exception's message on one line (whitespace runs, newlines included, become one space), or
    its type name when the message is empty: the text user errors quote from a library's exception."""
    return " ".join(str(err).split()) or type(err).__name__
