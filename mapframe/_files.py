"""File-mode helper shared by everything that writes results through a private temporary
file (which ``tempfile.mkstemp`` and safetensors create with mode 0600)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["give_default_mode"]


def give_default_mode(*paths: str | os.PathLike[str]) -> None:
    """Give each file the mode a plain ``open()`` would: 0666 less the process's umask
    (0644 by default), so results are readable like every other file the user writes."""
    mask = os.umask(0)
    os.umask(mask)
    for p in paths:
        os.chmod(Path(p), 0o666 & ~mask)
