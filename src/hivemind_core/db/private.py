"""Private files for the client database: it holds every access key and plaintext password.

A database file is created ``0600`` and, when its folder does not exist yet, the
folder is created ``0700``; a file found readable by others is narrowed to
``0600``. SQLite creates its ``-wal`` and ``-shm`` files with the database
file's permissions, so creating the file first is enough for them too.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "private_dir", "private_file"]

#: Mode of a database file and its companions.
FILE_MODE = 0o600
#: Mode of a folder created for a database.
DIR_MODE = 0o700


def private_dir(folder: Path) -> None:
    """Create ``folder`` (and missing parents) ``0700``; an existing folder is left as it is.

    Raises:
        OSError: the folder cannot be created.
    """
    if folder.is_dir():
        return
    folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(folder, DIR_MODE)


def private_file(path: Path) -> None:
    """Create ``path`` empty ``0600`` when missing; narrow it to ``0600`` when others may read it.

    Raises:
        OSError: the file cannot be created.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    os.close(fd)
    if os.stat(path).st_mode & 0o077:
        with contextlib.suppress(OSError):
            os.chmod(path, FILE_MODE)
