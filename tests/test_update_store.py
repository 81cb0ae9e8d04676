"""The device's update files on a real filesystem: private dirs, chunks at their offsets, a
bitmap that survives a restart, sha256 verification, read-only versions, a real full disk."""

import hashlib
import os
import subprocess
import uuid

import pytest

from edged.errors import UpdateError
from edged.signing import keys
from edged.update import journal as j
from edged.update.manifest import FileEntry, make, sign_manifest
from edged.update.store import SlotStore

NOW = 1_800_000_000
CHUNK = 1024


def entry(name, data, role="model"):
    return FileEntry(name, role, len(data), hashlib.sha256(data).hexdigest())


def manifest_for(files, version=2, created=NOW):
    m = make(model="det", version=version, files=[entry(n, d, r) for n, d, r in files],
             config={"task": "detection"}, devices=["dev"], groups=[], created=created,
             expires=NOW + 86400, chunk_bytes=CHUNK)  # fmt: skip
    return m, sign_manifest(m, [keys.generate()])


def chunks_of(data):
    return [data[i : i + CHUNK] for i in range(0, max(len(data), 1), CHUNK)] or [b""]


MODEL = os.urandom(5 * CHUNK + 300)
LABELS = b"person\nbag\nface\n"


def receive(store, m, files, skip=()):
    for name, data, _ in files:
        for i, part in enumerate(chunks_of(data)):
            if (name, i) not in skip:
                store.write_chunk(m, name, i, part)
    store.checkpoint(m)


FILES = [("model.onnx", MODEL, "model"), ("labels.txt", LABELS, "labels")]


def test_private_dirs_journal_and_a_counter_that_never_decreases(tmp_path):
    store = SlotStore(str(tmp_path), "det")
    assert oct(os.stat(store.root).st_mode & 0o777) == "0o700"
    assert oct(os.stat(os.path.dirname(store.root)).st_mode & 0o777) == "0o700"
    assert store.load_journal() == j.Journal()
    journal, _ = j.start(j.Journal(), "det", 2, "ab" * 32, 1)
    store.save_journal(journal)
    assert SlotStore(str(tmp_path), "det").load_journal() == journal
    m3, _ = manifest_for(FILES, version=3, created=NOW)
    m2, _ = manifest_for(FILES, version=2, created=NOW + 10)
    store.set_installed(m3)
    store.set_installed(m2)  # a signed downgrade serves v2, the counter stays at 3
    assert store.installed().version == 3 and store.installed().created == NOW + 10
    assert store.serving_version() == 2
    (tmp_path / "updates" / "det" / "journal.json").write_text("{not json")
    with pytest.raises(UpdateError, match="unreadable"):
        store.load_journal()


def test_chunks_resume_after_a_restart_and_the_sha256_decides(tmp_path):
    m, envelope = manifest_for(FILES)
    store = SlotStore(str(tmp_path), "det")
    store.begin(m, envelope)
    receive(store, m, FILES, skip={("model.onnx", 1), ("model.onnx", 4)})
    assert store.write_chunk(m, "labels.txt", 0, LABELS) is False  # a duplicate
    # a restart: a new store reads the persisted bitmap and the staged manifest
    again = SlotStore(str(tmp_path), "det")
    staged = again.staged_manifest(m.sha256)
    assert staged == m
    maps = again.chunk_maps(staged)
    assert maps["model.onnx"].missing(10) == [1, 4] and maps["labels.txt"].complete
    with pytest.raises(UpdateError, match="sha256 does not match"):
        again.verify(staged)
    again.write_chunk(staged, "model.onnx", 1, MODEL[CHUNK : 2 * CHUNK])
    again.write_chunk(staged, "model.onnx", 4, MODEL[4 * CHUNK : 5 * CHUNK])
    again.checkpoint(staged)
    again.verify(staged)
    for bad in ((("model.onnx", 0, b"x" * 10), "expected 1024"),
                (("model.onnx", 9, b""), "out of range"),
                (("other.bin", 0, b""), "not a file of this update")):  # fmt: skip
        with pytest.raises(UpdateError, match=bad[1]):
            again.write_chunk(staged, *bad[0])


def test_a_damaged_file_is_refused_by_name(tmp_path):
    m, envelope = manifest_for(FILES)
    store = SlotStore(str(tmp_path), "det")
    store.begin(m, envelope)
    receive(store, m, FILES)
    path = os.path.join(store.staging_dir(m.sha256), "files", "model.onnx")
    with open(path, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(UpdateError, match="model.onnx: sha256"):
        store.verify(m)


def test_promotion_is_read_only_and_keeps_the_previous_version(tmp_path):
    store = SlotStore(str(tmp_path), "det")
    for version in (2, 3, 4):
        m, envelope = manifest_for(FILES, version=version)
        store.begin(m, envelope)
        receive(store, m, FILES)
        store.verify(m)
        target = store.promote(m)
        assert not os.path.exists(store.staging_dir(m.sha256))
        store.set_installed(m)
        store.prune([version, version - 1])
    assert store.versions() == [3, 4]
    assert oct(os.stat(target).st_mode & 0o777) == "0o500"
    model = os.path.join(target, "model.onnx")
    assert oct(os.stat(model).st_mode & 0o777) == "0o400"
    with open(model, "rb") as f:
        assert f.read() == MODEL
    assert os.path.exists(os.path.join(target, "manifest.json"))
    store.remove_version(4)  # the serving version is never removed
    assert store.versions() == [3, 4]
    store.remove_version(3)
    assert store.versions() == [4]


@pytest.fixture
def small_fs(tmp_path):
    """A real 64 KiB tmpfs: a real ENOSPC."""
    mount = tmp_path / ("fs-" + uuid.uuid4().hex[:8])
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root: {r.stderr.decode().strip()}")
    yield str(mount)
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_is_a_clean_failure_that_frees_its_space(small_fs):
    big = os.urandom(100 * 1024)
    files = [("model.onnx", big, "model")]
    m, envelope = manifest_for(files)
    store = SlotStore(small_fs, "det")
    store.begin(m, envelope)
    free_before = store.disk_free()
    with pytest.raises(UpdateError, match="disk full") as caught:
        for i, part in enumerate(chunks_of(big)):
            store.write_chunk(m, "model.onnx", i, part)
            if i % 8 == 0:
                store.checkpoint(m)
    assert "chunk model.onnx#" in str(caught.value)
    assert not os.path.exists(store.staging_dir(m.sha256))
    assert store.disk_free() >= free_before
    # the journal still records the failure on the same filesystem
    failed, _ = j.transition(j.start(j.Journal(), "det", 2, m.sha256, 1)[0], "error", "disk")
    store.save_journal(failed)
    assert store.load_journal().state == j.FAILED
