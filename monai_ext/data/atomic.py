"""Write a file atomically: a unique temporary name in the target folder, then ``os.replace``.

A crash or an error while writing leaves the previous file (or none), never a half-written one; the
temporary file is removed on failure and gets the usual permissions (the umask applies).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> p = write_bytes_atomic(Path(tempfile.mkdtemp()) / "sub" / "a.txt", b"ok")
    >>> p.read_bytes()
    b'ok'
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = ["write_bytes_atomic"]


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` (parent folders created) through a temporary file; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
