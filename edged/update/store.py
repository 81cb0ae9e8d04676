"""The device's files for model updates: journal, installed version, staging, versions.

Layout of one model slot under the state directory (``<state>/updates/<model>/``, mode 0700:
staged models and their manifests are nobody else's business)::

    journal.json                 the update state machine's journal (edged.update.journal)
    installed.json               the installed version and its manifest's created time: only grows
    staging/<update>/manifest.json   the signed manifest of the update being received
    staging/<update>/files/<name>    files written chunk by chunk at their offsets
    staging/<update>/chunks.json     the bitmap of chunks on disk, per file (resume)
    versions/<version>/          verified files, read-only, with manifest.json; the installed
                                 version and the one before it are kept

Every small file is replaced atomically (temp file, fsync, rename, fsync of the directory:
``edged.engine.cache.atomic_write``). A chunk is marked received only after its data was
fsynced (:meth:`SlotStore.checkpoint`), so a bitmap never claims bytes a power cut lost; the
signed whole-file sha256 decides in the end anyway. A full disk is a clean failure: the
staging is dropped (freeing the space) and an :class:`UpdateError` says so.
"""

import errno
import hashlib
import json
import os
import shutil
import stat
from typing import Dict, List, Optional

from ..engine.cache import atomic_write, fsync_dir
from ..errors import StagingError, UpdateError
from .chunks import ChunkMap
from .journal import Journal
from .manifest import FileEntry, Installed, Manifest, parse_checked

JOURNAL_FILE = "journal.json"
INSTALLED_FILE = "installed.json"
MANIFEST_FILE = "manifest.json"
CHUNKS_FILE = "chunks.json"
#: versions kept on disk: the installed one and the one before it (the rollback target)
KEEP_VERSIONS = 2


def default_state_dir() -> str:
    """``$STATE_DIRECTORY`` (systemd ``StateDirectory=edged``), else ~/.local/state/edged."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return state
    return os.path.join(os.path.expanduser("~"), ".local", "state", "edged")


def _private_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


def _disk_error(what: str, e: OSError) -> StagingError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StagingError(f"{what}: disk full")
    return StagingError(f"{what}: {e.strerror or type(e).__name__}")


class SlotStore:
    """The files of one model slot's updates."""

    def __init__(self, state_dir: str, model: str) -> None:
        self.model = model
        self.root = os.path.join(state_dir, "updates", model)
        try:
            _private_dir(os.path.join(state_dir, "updates"))
            _private_dir(self.root)
        except OSError as e:
            raise _disk_error(f"update state {self.root}", e) from e
        self._maps: Dict[str, ChunkMap] = {}
        self._maps_update = ""
        self._dirty = False

    # -- journal and installed version ---------------------------------------------------------

    def load_journal(self) -> Journal:
        data = self._read_json(JOURNAL_FILE)
        if data is None:
            return Journal()
        try:
            return Journal.from_dict(data)
        except (TypeError, ValueError) as e:
            raise UpdateError(f"{self.root}/{JOURNAL_FILE}: not a journal ({e})") from None

    def save_journal(self, journal: Journal) -> None:
        self._write_json(JOURNAL_FILE, journal.to_dict())

    def installed(self) -> Installed:
        data = self._read_json(INSTALLED_FILE)
        if data is None:
            return Installed()
        return Installed(int(data.get("version", 0)), int(data.get("created", 0)))

    def set_installed(self, manifest: Manifest) -> None:
        """Record ``manifest`` as installed; the counter never goes down."""
        current = self.installed()
        version = max(current.version, manifest.version)
        created = max(current.created, manifest.created)
        self._write_json(
            INSTALLED_FILE,
            {"version": version, "created": created, "serving": manifest.version,
             "manifest_sha256": manifest.sha256},
        )  # fmt: skip

    def serving_version(self) -> int:
        """The version whose files serve (a signed downgrade serves below the counter)."""
        data = self._read_json(INSTALLED_FILE) or {}
        return int(data.get("serving", 0))

    # -- staging ----------------------------------------------------------------------------

    def staging_dir(self, update: str) -> str:
        return os.path.join(self.root, "staging", update)

    def begin(self, manifest: Manifest, envelope: bytes) -> None:
        """Create the staging of ``manifest`` (kept as it is when it exists: a resume)."""
        staging = self.staging_dir(manifest.sha256)
        try:
            _private_dir(os.path.join(self.root, "staging"))
            _private_dir(staging)
            _private_dir(os.path.join(staging, "files"))
            if not os.path.exists(os.path.join(staging, MANIFEST_FILE)):
                atomic_write(os.path.join(staging, MANIFEST_FILE), envelope)
            for entry in manifest.files:
                path = os.path.join(staging, "files", entry.name)
                if not os.path.exists(path):
                    with open(path, "wb"):
                        pass
        except OSError as e:
            self.discard(manifest.sha256)
            raise _disk_error(f"staging {manifest.model} v{manifest.version}", e) from e

    def staged_manifest(self, update: str) -> Manifest:
        """The manifest of a staged update (checked when it arrived)."""
        path = os.path.join(self.staging_dir(update), MANIFEST_FILE)
        try:
            with open(path, "rb") as f:
                return parse_checked(f.read())
        except OSError as e:
            raise UpdateError(f"update {update[:12]}: its staged manifest is gone") from e

    def interrupted_manifest(self, journal: Journal) -> Optional[Manifest]:
        """The manifest of the journal's update: in its staging, or (promoted) its version."""
        for directory in (self.staging_dir(journal.manifest_sha256),
                          self.version_dir(journal.version)):  # fmt: skip
            try:
                with open(os.path.join(directory, MANIFEST_FILE), "rb") as f:
                    manifest = parse_checked(f.read())
            except (OSError, UpdateError):
                continue
            if manifest.sha256 == journal.manifest_sha256:
                return manifest
        return None

    def chunk_maps(self, manifest: Manifest) -> Dict[str, ChunkMap]:
        """Per file, the chunks on disk (from the persisted bitmap; empty when none)."""
        if self._maps_update == manifest.sha256:
            return self._maps
        saved: Dict[str, str] = {}
        path = os.path.join(self.staging_dir(manifest.sha256), CHUNKS_FILE)
        try:
            with open(path) as f:
                saved = json.load(f)
        except (OSError, ValueError):
            saved = {}
        maps: Dict[str, ChunkMap] = {}
        for entry in manifest.files:
            count = manifest.chunk_count(entry)
            try:
                maps[entry.name] = ChunkMap.from_hex(count, saved.get(entry.name, ""))
            except (ValueError, TypeError):
                maps[entry.name] = ChunkMap(count)  # a damaged bitmap: ask for everything
        self._maps, self._maps_update, self._dirty = maps, manifest.sha256, False
        return maps

    def write_chunk(self, manifest: Manifest, name: str, index: int, data: bytes) -> bool:
        """Write one chunk at its offset; False when it was already there.

        Raises:
            UpdateError: an unknown file or index, a wrong length, or a write that failed
                (disk full: the staging is removed first, freeing its space).
        """
        entry = _entry(manifest, name)
        maps = self.chunk_maps(manifest)
        chunks = maps[name]
        if not 0 <= index < chunks.count:
            raise UpdateError(f"chunk {name}#{index}: out of range (0..{chunks.count - 1})")
        offset = index * manifest.chunk_bytes
        expected = max(0, min(manifest.chunk_bytes, entry.size - offset))
        if len(data) != expected:
            raise UpdateError(f"chunk {name}#{index}: {len(data)} bytes, expected {expected}")
        if index in chunks:
            return False
        path = os.path.join(self.staging_dir(manifest.sha256), "files", name)
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                written = os.pwrite(fd, data, offset) if data else 0
            finally:
                os.close(fd)
            if written != len(data):
                raise OSError(errno.ENOSPC, "short write")
        except OSError as e:
            self.discard(manifest.sha256)
            raise _disk_error(f"chunk {name}#{index}", e) from e
        chunks.add(index)
        self._dirty = True
        return True

    def checkpoint(self, manifest: Manifest) -> None:
        """Make the received chunks durable: fsync the data, then persist the bitmap."""
        if not self._dirty or self._maps_update != manifest.sha256:
            return
        staging = self.staging_dir(manifest.sha256)
        try:
            for entry in manifest.files:
                fd = os.open(os.path.join(staging, "files", entry.name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            bits = {name: m.to_hex() for name, m in self._maps.items()}
            atomic_write(os.path.join(staging, CHUNKS_FILE), json.dumps(bits).encode())
        except OSError as e:
            self.discard(manifest.sha256)
            raise _disk_error(f"staging {manifest.model} v{manifest.version}", e) from e
        self._dirty = False

    def verify(self, manifest: Manifest) -> None:
        """Every staged file's size and sha256 against the signed manifest.

        Raises:
            UpdateError: naming the first file that does not match.
        """
        files = os.path.join(self.staging_dir(manifest.sha256), "files")
        for entry in manifest.files:
            got = _sha256_file(os.path.join(files, entry.name), entry.size)
            if got != entry.sha256:
                raise UpdateError(f"{entry.name}: sha256 does not match the manifest")

    def discard(self, update: str) -> None:
        """Remove a staging (never fails: a leftover is removed by the next one)."""
        if self._maps_update == update:
            self._maps, self._maps_update, self._dirty = {}, "", False
        shutil.rmtree(self.staging_dir(update), ignore_errors=True)

    # -- versions ---------------------------------------------------------------------------

    def version_dir(self, version: int) -> str:
        return os.path.join(self.root, "versions", str(version))

    def promote(self, manifest: Manifest) -> str:
        """Move the verified staging to ``versions/<version>/``, read-only; its path."""
        staging = self.staging_dir(manifest.sha256)
        versions = os.path.join(self.root, "versions")
        target = self.version_dir(manifest.version)
        try:
            _private_dir(versions)
            shutil.copyfile(
                os.path.join(staging, MANIFEST_FILE), os.path.join(staging, "files", MANIFEST_FILE)
            )
            files = os.path.join(staging, "files")
            for name in os.listdir(files):
                os.chmod(os.path.join(files, name), 0o400)
            if os.path.exists(target):
                self._remove_version(target)
            os.replace(files, target)
            os.chmod(target, 0o500)
            fsync_dir(versions)
        except OSError as e:
            raise _disk_error(f"promoting {manifest.model} v{manifest.version}", e) from e
        self.discard(manifest.sha256)
        return target

    def remove_version(self, version: int) -> None:
        """Drop a version that failed (never the serving one)."""
        if version and version != self.serving_version():
            self._remove_version(self.version_dir(version))

    def prune(self, keep: List[int]) -> None:
        """Remove every version not in ``keep`` and every staging left over."""
        versions = os.path.join(self.root, "versions")
        for name in _listdir(versions):
            if not name.isdigit() or int(name) not in keep:
                self._remove_version(os.path.join(versions, name))
        for name in _listdir(os.path.join(self.root, "staging")):
            self.discard(name)

    def versions(self) -> List[int]:
        return sorted(int(n) for n in _listdir(os.path.join(self.root, "versions")) if n.isdigit())

    def disk_free(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    @staticmethod
    def _remove_version(path: str) -> None:
        # read-only directories: give the owner write back so rmtree can unlink
        for root, _dirs, _files in os.walk(path):
            os.chmod(root, stat.S_IRWXU)
        shutil.rmtree(path, ignore_errors=True)

    # -- small JSON files ---------------------------------------------------------------------

    def _read_json(self, name: str) -> Optional[dict]:
        path = os.path.join(self.root, name)
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise UpdateError(f"{path}: unreadable ({type(e).__name__})") from None
        if not isinstance(data, dict):
            raise UpdateError(f"{path}: not a JSON object")
        return data

    def _write_json(self, name: str, data: dict) -> None:
        path = os.path.join(self.root, name)
        try:
            atomic_write(path, json.dumps(data, sort_keys=True).encode())
        except OSError as e:
            raise _disk_error(path, e) from e


def _entry(manifest: Manifest, name: str) -> FileEntry:
    for entry in manifest.files:
        if entry.name == name:
            return entry
    raise UpdateError(f"chunk for {name[:40]!r}: not a file of this update")


def _listdir(path: str) -> List[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _sha256_file(path: str, size: int) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size != size:
                return ""
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return ""
    return digest.hexdigest()
