"""File helpers shared by everything that writes results: atomic writes through a private
temporary file, and the mode such a file gets (``tempfile.mkstemp`` and safetensors create
it with mode 0600)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["give_default_mode", "write_atomically"]


def give_default_mode(*paths: str | os.PathLike[str]) -> None:
    """Give each file the mode a plain ``open()`` would: 0666 less the process's umask
    (0644 by default), so results are readable like every other file the user writes."""
    mask = os.umask(0)
    os.umask(mask)
    for p in paths:
        os.chmod(Path(p), 0o666 & ~mask)


def write_atomically(path: Path, text: str, durable: bool = False) -> Path:
    """Write ``text`` to ``path`` through a uniquely named temporary file in the same folder
    and an atomic rename: readers see the old or the new file, never half of one, and
    several processes writing the same path at once each leave a whole file. ``durable``:
    the file's bytes are on disk (``fsync``) before the rename, so a power cut leaves the
    whole file or none (for what exists nowhere else, such as the store's journal)."""
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            fh.write(text)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        give_default_mode(tmp)  # mkstemp's 0600, not the user's usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
