"""One writer per output folder: an OS lock that `ganno bench` and `ganno train` hold.

Two processes appending to one `results.jsonl`, or writing checkpoints into one training
folder, would double or mix results. The lock is `flock` on `FOLDER/.ganno.lock`; the OS
drops it when the holder exits, also on SIGKILL, so a stale lock never blocks a new run.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".ganno.lock"


class UsageError(Exception):
    """A user mistake the CLI reports as one line, without a traceback."""


class FolderBusy(UsageError):
    """Another process holds the folder's lock."""


def prepare_out_folder(path: str | os.PathLike) -> Path:
    """Create `path` as a folder; UsageError when it is a file or cannot be written."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {str(folder)!r} is a file; allowed: a folder (new or existing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--out {str(folder)!r} cannot be created: {error.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--out {str(folder)!r} is not writable; allowed: a writable folder")
    return folder


@contextmanager
def folder_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold the exclusive lock of folder `path` (created if needed) while the block runs.

    Raises `FolderBusy`, naming the holder's PID, at once when another process holds it.
    """
    folder = prepare_out_folder(path)
    lock_path = folder / LOCK_NAME
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise FolderBusy(
                f"{str(folder)!r} is in use by another ganno process (PID {holder}); wait for "
                "it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield folder
    finally:
        os.close(fd)  # closing the descriptor releases the lock
