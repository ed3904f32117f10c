"""Opening the files a campaign names: regular files only, and no larger than they can be.

A FIFO given as the campaign file or a suppression list would hang the run, and
/dev/zero would fill the memory. So a file is opened without blocking, checked to be a
regular file and held to a size that fits its purpose before anything is read. The
errors are OSErrors, which the callers already turn into messages that name the file.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path
from typing import BinaryIO

KIB, MIB = 1024, 1024 * 1024


def open_regular(path: Path, limit: int) -> BinaryIO:
    """``path`` opened for reading. Raises OSError when it is not a regular file (a FIFO,
    a device, a folder) or holds more than ``limit`` bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO's open would wait for a writer
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, "a folder, not a file", str(path))
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a FIFO, a device or a folder)",
                          str(path))
        if info.st_size > limit:
            raise OSError(errno.EFBIG, f"{info.st_size:,} bytes, more than the "
                                       f"{limit:,} it may hold", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: Path, limit: int) -> bytes:
    """The whole of a regular file of at most ``limit`` bytes (see :func:`open_regular`)."""
    with open_regular(path, limit) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:  # it grew after it was measured: refused, not cut short
        raise OSError(errno.EFBIG, f"more than the {limit:,} bytes it may hold", str(path))
    return data


def open_text(path: Path, limit: int, encoding: str = "utf-8") -> io.TextIOWrapper:
    """A regular file of at most ``limit`` bytes, as text read line by line."""
    return io.TextIOWrapper(open_regular(path, limit), encoding=encoding, newline="")
