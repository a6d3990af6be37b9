"""Where the compile caches live, and how their files are read (shared by the backends).

`~/.cache/irgrad` by default, `IRGRAD_CACHE_DIR` elsewhere, off with `IRGRAD_CACHE=0`.
A cache file is only trusted as far as it proves itself (each backend checks its own
entries); reading one must never hang or exhaust memory, whatever sits at its path.
"""

from __future__ import annotations

import os
import stat


def cache_dir() -> str | None:
    """The root of the compile caches, or None when caching is off."""
    if os.environ.get("IRGRAD_CACHE", "1") == "0":
        return None
    return os.environ.get("IRGRAD_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "irgrad")


def read_regular_file(path: str, limit: int) -> bytes | None:
    """The bytes of `path` if it is a regular file of at most `limit` bytes, else None.
    Opening never blocks (a FIFO) and never follows a final symbolic link (to /dev/zero);
    a file that grows while it is read is rejected too."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        chunks, n = [], 0
        while True:
            chunk = os.read(fd, min(1 << 24, st.st_size + 1 - n))
            if not chunk:
                break
            chunks.append(chunk)
            n += len(chunk)
            if n > st.st_size:
                return None
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)
