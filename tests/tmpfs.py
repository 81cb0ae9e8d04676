"""A real small file system for full-disk tests: a tmpfs mounted in the test, filled by a file.

Mounting needs root (CI runs the tests as root): as root a failed mount FAILS the
test; without root the test is skipped and says why.
"""

import errno
import os
import subprocess

import pytest


class SmallDisk:
    """A ``size``-byte tmpfs at ``directory``; :meth:`fill` takes every free block."""

    def __init__(self, directory: str, size: int) -> None:
        self.directory = directory
        self.size = size
        self.filler = os.path.join(directory, "filler")
        os.makedirs(directory, exist_ok=True)
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root (CI runs the tests as root)")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", directory],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            universal_newlines=True,
        )
        if done.returncode != 0:
            pytest.fail(f"cannot mount a {size}-byte tmpfs at {directory} as root: {done.stdout}")

    def free(self) -> int:
        st = os.statvfs(self.directory)
        return st.f_bavail * st.f_frsize

    def fill(self) -> int:
        """Append to the filler file until the disk is full; returns the bytes written."""
        written = 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (64 << 10, 4 << 10, 1):
                while True:
                    try:
                        n = os.write(fd, b"\0" * chunk)
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        break
                    written += n
                    if n < chunk:
                        break
        finally:
            os.close(fd)
        return written

    def unfill(self) -> None:
        os.remove(self.filler)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", self.directory], check=False)
