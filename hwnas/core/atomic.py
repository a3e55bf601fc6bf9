"""Atomic file writes: readers see the old file or the new one, never half of one."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from hwnas.core.errors import OutputError

_WRITE_FIX = "choose another --out path, or free disk space / fix permissions"


def ensure_writable_dir(folder: Path) -> None:
    """Create ``folder`` if needed; raise :class:`OutputError` with a fix when it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {folder}: {exc.strerror or exc}.",
                          "choose another --out path, or fix the folder's permissions") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {folder} is not writable.",
                          "choose another --out path, or fix the folder's permissions")


def ensure_writable_file(path: Path, flag: str) -> Path:
    """Check, before any work, that the file ``flag`` names can be written (its folder made if needed)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a directory, so the file cannot be written there.",
                          f"give {flag} a file path, e.g. {path / 'report.json'}")
    ensure_writable_dir(path.parent)
    return path


def atomic_write_with(path: Path, write: Callable[[Path], None], fix: str = _WRITE_FIX) -> Path:
    """``write(tmp)`` makes the file at a temp path in the same folder; it is fsynced and renamed over
    ``path``. On any failure the temp file is removed and the old file kept; an OSError becomes an
    :class:`OutputError` with ``fix``, anything else passes through. The file gets the usual permissions
    (the process's umask, applied by whoever creates it), not a temp file's 0600."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}.", fix) from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write_with`)."""

    def write(tmp: Path) -> None:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            f.write(data)

    atomic_write_with(path, write)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
