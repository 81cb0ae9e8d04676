"""Crash-safe file writes: fsync a file and its directory, replace a file atomically.

A rename is atomic (POSIX ``rename(2)``), but without an fsync of the data first a power cut can
leave the new name pointing at an empty file, and without an fsync of the directory the rename
itself may be lost (ext4's ``data=ordered`` documentation, "auto_da_alloc").
"""

import os


def fsync_dir(path: str) -> None:
    """Flush the directory ``path`` (renames and new names in it) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_synced(path: str, data: bytes) -> None:
    """Write ``data`` to a new file and fsync it (the caller renames and fsyncs the dir)."""
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write(path: str, data: bytes, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, fsync of the directory.

    Readers see the old or the new content, never a mix. ``durable=False`` skips both fsyncs,
    for files that are rewritten often and worthless after a power cut (a health report).
    """
    directory = os.path.dirname(path) or "."
    tmp = f"{path}.tmp.{os.getpid()}.{os.urandom(4).hex()}"
    try:
        if durable:
            write_file_synced(tmp, data)
        else:
            with open(tmp, "xb") as f:
                f.write(data)
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
    if durable:
        fsync_dir(directory)


def remove_quietly(path: str) -> None:
    """Remove the file ``path`` if it exists; errors are ignored (best-effort cleanup)."""
    try:
        os.unlink(path)
    except OSError:
        pass
