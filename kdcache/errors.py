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
