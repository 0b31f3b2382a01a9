"""The root of TrainWarden's error hierarchy: every error a user can see derives from it."""

from __future__ import annotations

__all__ = ["TrainWardenError"]


class TrainWardenError(Exception):
    """Base class of every error TrainWarden raises on purpose.

    ``message`` says what went wrong (naming the file or object involved); ``hint`` says what
    the user can do next. The CLI catches this class once, prints :meth:`diagnostics` and exits
    with :attr:`exit_code`: ``2`` (a usage, input or internal error) unless the error is itself
    a verdict about the input (a refused unsafe load is ``1``, a finding).
    """

    #: The CLI's exit status for this error: 2 (error) unless a subclass is a finding (1).
    exit_code: int = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def diagnostics(self) -> str:
        """Return a human-readable explanation with the next step the user should take."""
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message
