"""Refuse a study in a worker process that multiprocessing is still setting up.

Under the 'spawn' and 'forkserver' start methods every worker re-imports the main script; a
script without an ``if __name__ == '__main__':`` guard would start its study again there
(and, with a shared store, wait forever for the points the driver claimed). A study's start,
a built-in store's ``open`` and the process executor's ``start`` each call
:func:`refuse_study_in_bootstrapping_worker`, so the refusal holds whichever of them a
script reaches first. Its own module so that the storage and the study need not import the
process executor for it.
"""

from __future__ import annotations

import multiprocessing

from mapframe.errors import ConfigError

#: The one-line reason an unguarded script's study cannot run in a worker it started.
GUARD_HINT = ("guard the script's study with `if __name__ == '__main__':` (the 'spawn' and "
              "'forkserver' start methods re-import the main script in every worker)")


def refuse_study_in_bootstrapping_worker() -> None:
    """Raise :class:`~mapframe.errors.ConfigError` when this process is a worker that
    multiprocessing is still setting up (re-importing the main script under spawn or
    forkserver): a study started there comes from a script without an
    ``if __name__ == '__main__':`` guard, and would run again in every worker (with a shared
    store, waiting forever for the points the driver claimed)."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise ConfigError("a study started while a worker process was importing the main "
                          f"script; {GUARD_HINT}")
