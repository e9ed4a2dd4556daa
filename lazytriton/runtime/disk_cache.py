"""The on-disk cache: a folder people read. Writes are atomic so processes can share it."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from .._version import __version__


def default_cache_dir() -> Path:
    env = os.environ.get("LAZYTRITON_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "lazytriton"


_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: the permissions a plainly created file would get


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file.
    The file gets the usual permissions (mkstemp's are owner-only: the cache is for reading)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def content_key(*parts: str) -> str:
    """Content address: the parts plus the lazytriton version."""
    h = hashlib.sha256(__version__.encode())
    for part in parts:
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:24]
