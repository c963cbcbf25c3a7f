"""The library's error types. Library code raises these; only the command line (``effnet.cli`` and the
packages' ``commands`` modules) turns them into the one-line ``effnet: error: ...`` and an exit code."""

from __future__ import annotations

import re

# scheme://user:password@host -- a database URL (`effnet search --storage postgresql://...`) or a mirror
_CREDENTIALS = re.compile(r"(?<=://)([^:/@\s]*):[^@/\s]*@")


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` in it replaced by ``***``: what is
    printed (errors, logs) or stored (``results.json``) never holds a credential."""
    return _CREDENTIALS.sub(r"\1:***@", text)


class UsageError(ValueError):
    """A user's mistake (bad name, bad file, bad flag combination): the message names the problem."""


class DataError(UsageError):
    """A dataset folder that cannot be used; the message names the folder and the problem."""


class CheckpointError(UsageError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


class ImageLoadError(UsageError):
    """An image file that cannot be decoded; the message names the file."""


class ExportError(RuntimeError):
    """An export whose result does not match PyTorch within tolerance (or cannot be produced)."""


class TrainingDiverged(RuntimeError):
    """Loss or weights became non-finite; the last good checkpoint is kept."""


class UnknownModelError(UsageError, KeyError):
    """A model name that is not registered (a KeyError too, as a registry lookup)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
