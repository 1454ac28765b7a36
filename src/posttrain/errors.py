"""User-facing errors: one line that names the place and the fix.

The CLI prints `str(err)` and exits with `err.exit_code`; `--debug` shows the traceback.
"""

from __future__ import annotations


class PosttrainError(Exception):
    """A problem with the user's input (path, file, schema, recipe), not a bug in posttrain.

    >>> str(PosttrainError("no such file", place="data/x.parquet", fix="check the path"))
    'data/x.parquet: no such file (fix: check the path)'
    """

    exit_code = 2

    def __init__(self, message: str, *, place: str | None = None, fix: str | None = None) -> None:
        self.message = message
        self.place = place
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.place}: {self.message}" if self.place else self.message
        if self.fix:
            text += f" (fix: {self.fix})"
        return text


class SourceError(PosttrainError):
    """A source that cannot be opened or read: missing path, wrong format, wrong schema, corrupt file."""


class RecipeError(PosttrainError):
    """A recipe that does not parse or names an unknown key."""


class UnitFailed(PosttrainError):
    """A work unit failed after its retries; the run stops and can be resumed."""

    exit_code = 3
