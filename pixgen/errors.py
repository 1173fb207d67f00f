"""The one exception type users see.

Every refusal pixgen makes on bad input (a wrong flag, a missing file, a corrupt image, a
checkpoint of another model) is a :class:`PixgenError` with a one-line message naming the
culprit and the fix. The CLI prints it without a traceback and exits with status 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PixgenError(Exception):
    """A user-facing error: short, names what is at fault and what to do.

    ``every_rank``: under torchrun, every process raises it alike (it is decided on values
    the processes share), so the CLI prints it once, on rank 0.
    """

    every_rank = False


class DataError(PixgenError):
    """A dataset cannot be found, read or decoded."""


class ConfigError(PixgenError):
    """A flag, config key or value is invalid."""


class CheckpointError(PixgenError):
    """A run directory or checkpoint cannot be loaded."""


class UnsafeCheckpointError(CheckpointError):
    """A file refused unread, or unbuilt, because loading it could run code (a pickle)."""


class TrainingDiverged(PixgenError):
    """Training produced non-finite losses too many steps in a row."""

    every_rank = True


class StageOneStopped(PixgenError):
    """Stage one of a two-stage model stopped early (a signal or the time limit), so the
    second stage did not start; ``signal`` is the signal's number, if one stopped it."""

    every_rank = True

    def __init__(self, message: str, *, signal: int | None = None) -> None:
        super().__init__(message)
        self.signal = signal


class NonFiniteSamples(PixgenError):
    """A model generated images with NaN or inf values, which no score can describe."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest valid name, or '' when none is close."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
