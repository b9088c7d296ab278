"""The one distinction the command line makes: a `UserError` (an invalid suite, a bad option, a
missing or unreadable file, a run directory of another suite) exits 2 with its one-line message;
anything else is a bug or a failed cell and is never dressed up as a user error."""


class UserError(Exception):
    """Something the user can fix; the message names the file or option and what is allowed."""
