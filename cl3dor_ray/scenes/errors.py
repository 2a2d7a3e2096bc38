"""The one error type for malformed scan input."""

from __future__ import annotations

from pathlib import Path


class ScanFormatError(ValueError):
    """A scan file is missing or malformed. `path` names the file, `reason` what was wrong."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
