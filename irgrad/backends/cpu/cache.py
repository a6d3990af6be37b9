"""The on-disk compile cache: `~/.cache/irgrad`, `IRGRAD_CACHE_DIR`, off with `IRGRAD_CACHE=0`.

An entry holds everything needed to run a compiled program without compiling it again:
the object code, the runtime layout (arena size, pointer-table slots, where results are),
the constants, and the planned IR and LLVM IR texts (for `.ir` and `--emit`). The key is
the sha256 of the function's IR text before optimization, the pipeline, the thread
count, the LLVM opt level, the CPU name and features, the llvmlite version and a
fingerprint of irgrad's own source, so a hit skips the passes, the lowering and LLVM
entirely, and any change to the compiler invalidates old entries.

Entries are written atomically (temporary file, then rename), so two processes compiling
the same program at once both succeed. Each carries its own key and the sha256 of its
header and the sizes and sha256 of its parts: an entry copied from another program, a
truncated or corrupt one is detected, ignored and rebuilt. Only a regular file of at most
`MAX_ENTRY_BYTES` is read (never a FIFO, a device, or a link to one: opening does not
block and follows no final symbolic link). The backend then checks the entry against the
plan it carries before any of its code runs (backend.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

from ...codegen.filecache import cache_dir, read_regular_file

MAGIC = b"IRGRAD-CACHE-4\n"
MAX_ENTRY_BYTES = 1 << 31
_fingerprint: dict = {}


def source_fingerprint() -> str:
    """sha256 over irgrad's Python sources: code changes invalidate cached programs."""
    if "value" not in _fingerprint:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        h = hashlib.sha256()
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(".py"):
                    path = os.path.join(dirpath, name)
                    h.update(os.path.relpath(path, root).encode())
                    with open(path, "rb") as fh:
                        h.update(fh.read())
        _fingerprint["value"] = h.hexdigest()
    return _fingerprint["value"]


def make_key(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def _path(key: str) -> str | None:
    d = cache_dir()
    return os.path.join(d, key[:2], key + ".entry") if d else None


def load(key: str):
    """(meta dict, {blob name: bytes}) or None when absent, truncated or corrupt."""
    path = _path(key)
    if path is None:
        return None
    data = read_regular_file(path, MAX_ENTRY_BYTES)
    if data is None or not data.startswith(MAGIC):
        return None
    try:
        end = data.index(b"\n", len(MAGIC))
        header = data[len(MAGIC):end]
        digest_end = data.index(b"\n", end + 1)
        if data[end + 1:digest_end].decode() != hashlib.sha256(header).hexdigest():
            return None  # the header itself was damaged
        meta = json.loads(header)
        if not isinstance(meta, dict) or meta.get("key") != key:
            return None  # another program's entry, copied or linked here
        blobs, pos = {}, digest_end + 1
        for name, size, digest in meta["blobs"]:
            part = data[pos:pos + size]
            if len(part) != size or hashlib.sha256(part).hexdigest() != digest:
                return None
            blobs[name] = part
            pos += size
        if pos != len(data):
            return None
    except (ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None
    return meta, blobs


def store(key: str, meta: dict, blobs: dict[str, bytes]) -> None:
    path = _path(key)
    if path is None:
        return
    meta = dict(meta, key=key, blobs=[(n, len(b), hashlib.sha256(b).hexdigest()) for n, b in blobs.items()])
    d = os.path.dirname(path)
    try:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".entry")
        with os.fdopen(fd, "wb") as fh:
            header = json.dumps(meta).encode()
            fh.write(MAGIC + header + b"\n" + hashlib.sha256(header).hexdigest().encode() + b"\n")
            for b in blobs.values():
                fh.write(b)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only or full disk only costs the cache

