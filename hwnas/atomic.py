"""Atomic file writes: readers see the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hwnas.errors import OutputError

_UMASK = os.umask(0o022)
os.umask(_UMASK)


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}.",
                          "choose another --out path, or free disk space / fix permissions") from None
    _fsync_dir(path.parent)


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
