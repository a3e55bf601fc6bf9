"""Silence native libraries that print to the process's stdout/stderr file descriptors."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def native_output_captured() -> Iterator[list[str]]:
    """Redirect fds 1 and 2 to a temp file; the yielded list receives the text (for error messages)."""
    sink: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            yield sink
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            tmp.seek(0)
            sink.append(tmp.read().decode(errors="replace"))


@contextlib.contextmanager
def quiet_library() -> Iterator[list[str]]:
    """Import or call a library that talks (litert-torch's torchao and torch plugins as they load, ai-edge-
    quantizer's progress bars): its warnings, its log records up to WARNING (which a handler left by another
    library may fail to write) and its native output are held back; the yielded list receives the native text."""
    previous = logging.root.manager.disable
    with warnings.catch_warnings(), native_output_captured() as log:
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield log
        finally:
            logging.disable(previous)
