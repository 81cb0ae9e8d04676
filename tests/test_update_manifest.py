"""Signed manifests and key lists: every refusal a device makes before the first chunk.

Real Ed25519 signatures (the `cryptography` package edged depends on), real canonical bytes;
each case is one way an attacker or an accident presents a manifest (TUF's attack list:
arbitrary install, rollback, freeze/replay, endless data, mix-and-match, key compromise).
"""

import hashlib
import json

import pytest

from edged.errors import UpdateError
from edged.signing import canonical, keys
from edged.update.chunks import ChunkMap
from edged.update.manifest import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_LIMITS,
    FileEntry,
    Installed,
    UpdateLimits,
    check,
    make,
    required_disk_bytes,
    sign_manifest,
)

NOW = 1_800_000_000
DAY = 86400
GB = 1 << 30


@pytest.fixture(scope="module")
def operator():
    return keys.generate()


@pytest.fixture(scope="module")
def trusted(operator):
    return keys.make_keylist([operator.public], threshold=1, version=1)


def model_file(data=b"onnx-bytes" * 100, name="model.onnx"):
    return FileEntry(name, "model", len(data), hashlib.sha256(data).hexdigest())


def manifest(**changes):
    values = dict(
        model="peoplenet",
        version=2,
        files=[model_file()],
        config={"task": "detection", "detection": {"threshold": 0.4}},
        devices=["jetson-01"],
        groups=["site-a"],
        created=NOW - 60,
        expires=NOW + DAY,
    )
    values.update(changes)
    return make(**values)


INSTALLED = Installed(1, NOW - DAY)


def verify(data, trusted, installed=INSTALLED, device="jetson-01", groups=(), disk=10 * GB,
           limits=DEFAULT_LIMITS):  # fmt: skip
    return check(data, trusted, installed, device, list(groups), NOW, disk, limits)


def test_a_signed_manifest_passes_and_carries_its_identity(operator, trusted):
    m = verify(sign_manifest(manifest(), [operator]), trusted)
    assert (m.model, m.version, m.config["detection"]["threshold"]) == ("peoplenet", 2, 0.4)
    assert len(m.sha256) == 64 and m.chunk_bytes == DEFAULT_CHUNK_BYTES


def test_group_targets_reach_members(operator, trusted):
    data = sign_manifest(manifest(devices=[], groups=["site-a"]), [operator])
    assert verify(data, trusted, device="jetson-99", groups=["site-a"]).version == 2
    with pytest.raises(UpdateError, match="not for this device"):
        verify(data, trusted, device="jetson-99", groups=["site-b"])


def flip(data, at):
    b = bytearray(data)
    b[at] ^= 0x01
    return bytes(b)


def envelope_with(data, **signed_changes):
    doc = json.loads(data)
    doc["signed"].update(signed_changes)
    return canonical.encode(doc)


def refusal(data, trusted, **kw):
    with pytest.raises(UpdateError) as e:
        verify(data, trusted, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_bad_signature_unknown_key_and_tampering_are_refused(operator, trusted):
    good = sign_manifest(manifest(), [operator])
    stranger = keys.generate()
    assert "unknown keys" in refusal(sign_manifest(manifest(), [stranger]), trusted)
    # a signed field changed after signing (a bigger version, another target)
    assert "bad signature" in refusal(envelope_with(good, version=99), trusted)
    assert "bad signature" in refusal(envelope_with(good, groups=["everyone"]), trusted)
    # one flipped bit inside the signature
    doc = json.loads(good)
    doc["signatures"][0]["sig"] = doc["signatures"][0]["sig"][:-1] + (
        "0" if doc["signatures"][0]["sig"][-1] != "0" else "1"
    )
    assert "bad signature" in refusal(canonical.encode(doc), trusted)
    # a flipped byte anywhere in the bytes: refused, whatever it hits
    for at in range(0, len(good), 7):
        with pytest.raises(UpdateError):
            verify(flip(good, at), trusted)


def test_unsigned_and_malformed_envelopes(operator, trusted):
    doc = json.loads(sign_manifest(manifest(), [operator]))
    assert "not signed" in refusal(
        canonical.encode({"signed": doc["signed"], "signatures": []}), trusted
    )
    assert "not a signed envelope" in refusal(b"[]", trusted)
    assert "not UTF-8 JSON" in refusal(b"\xff\xfe", trusted)
    assert "deeper" in refusal(b"[" * 1000 + b"]" * 1000, trusted)
    assert "not UTF-8 JSON" in refusal(b'{"signed": NaN}', trusted)


def test_downgrade_replay_and_expiry(operator, trusted):
    old = sign_manifest(manifest(version=1), [operator])
    assert "not newer" in refusal(old, trusted)
    same = sign_manifest(manifest(version=2), [operator])
    assert "not newer" in refusal(same, trusted, installed=Installed(2, NOW - DAY))
    expired = sign_manifest(manifest(expires=NOW - 1), [operator])
    assert "expired" in refusal(expired, trusted)
    # a signed downgrade works once; replaying it after a newer install does not
    down = sign_manifest(manifest(version=1, downgrade=True, created=NOW - 10), [operator])
    assert verify(down, trusted, installed=Installed(2, NOW - DAY)).version == 1
    assert "replay" in refusal(down, trusted, installed=Installed(3, NOW - 5))


def test_caps_refuse_huge_claims_before_any_transfer(operator, trusted):
    ten_gb = FileEntry("model.onnx", "model", 10 * GB, "0" * 64)
    assert "more than the" in refusal(sign_manifest(manifest(files=[ten_gb]), [operator]), trusted)
    million = FileEntry("model.onnx", "model", 1_000_000 * 1024, "0" * 64)
    tiny_chunks = manifest(files=[million], chunk_bytes=1024)
    assert "chunks" in refusal(sign_manifest(tiny_chunks, [operator]), trusted,
                               limits=UpdateLimits(max_total_bytes=2 * GB))  # fmt: skip
    big = sign_manifest(manifest(), [operator])
    assert "free disk" in refusal(big, trusted, disk=required_disk_bytes(manifest()) - 1)
    assert "bytes, more than" in refusal(big + b" " * (64 * 1024), trusted)


@pytest.mark.parametrize(
    "files, match",
    [
        ([], "0 files"),
        ([model_file(name="../etc/passwd.onnx")], "plain file name"),
        ([model_file(name="model.bin")], ".onnx or .etlt"),
        ([model_file(), model_file()], "one name"),
        ([model_file(), model_file(name="b.onnx")], "exactly one"),
        ([model_file()._replace(sha256="XYZ")], "sha256"),
        ([model_file()._replace(role="binary")], "role"),
    ],
)
def test_file_lists_that_are_refused(files, match):
    with pytest.raises(UpdateError, match=match):
        manifest(files=files)


def test_floats_must_be_finite_and_keys_strings():
    with pytest.raises(UpdateError, match="finite"):
        canonical.encode({"threshold": float("nan")})
    with pytest.raises(UpdateError, match="keys must be strings"):
        canonical.encode({1: "a"})
    assert canonical.encode({"b": 1, "a": [0.5, "é"]}) == '{"a":[0.5,"é"],"b":1}'.encode()


def test_threshold_signatures(operator):
    second = keys.generate()
    two_of_two = keys.make_keylist([operator.public, second.public], threshold=2, version=1)
    one = sign_manifest(manifest(), [operator])
    assert "needs 2" in refusal(one, two_of_two)
    both = sign_manifest(manifest(), [operator, second])
    assert verify(both, two_of_two).version == 2
    twice = json.loads(one)
    twice["signatures"] = twice["signatures"] * 2  # the same key twice counts once
    assert "needs 2" in refusal(canonical.encode(twice), two_of_two)


def test_key_rotation_needs_the_old_and_the_new_threshold(operator, trusted):
    new_key = keys.generate()
    rotated = keys.make_keylist([new_key.public], threshold=1, version=2)
    doc = keys.sign_keylist(rotated, [operator, new_key])
    assert keys.rotate(trusted, doc, NOW).keys == {new_key.id: new_key.public}
    with pytest.raises(UpdateError, match="of the trusted keys"):
        keys.rotate(trusted, keys.sign_keylist(rotated, [new_key]), NOW)
    with pytest.raises(UpdateError, match="of its own keys"):
        keys.rotate(trusted, keys.sign_keylist(rotated, [operator]), NOW)
    stale = keys.make_keylist([new_key.public], threshold=1, version=1)
    with pytest.raises(UpdateError, match="not newer"):
        keys.rotate(trusted, keys.sign_keylist(stale, [operator, new_key]), NOW)
    # after rotation the old key no longer signs manifests
    assert "unknown keys" in refusal(sign_manifest(manifest(), [operator]),
                                     keys.rotate(trusted, doc, NOW))  # fmt: skip


def test_private_key_files_are_owner_only_and_errors_name_no_content(tmp_path, operator):
    path = str(tmp_path / "op.key")
    keys.write_private(path, operator)
    assert oct(__import__("os").stat(path).st_mode & 0o777) == "0o600"
    assert keys.read_private(path) == operator
    (tmp_path / "bad.key").write_text("secret-not-hex\n")
    with pytest.raises(UpdateError) as e:
        keys.read_private(str(tmp_path / "bad.key"))
    assert "secret" not in str(e.value)


def test_chunk_map_resumes_from_its_persisted_bits():
    chunks = ChunkMap(20)
    for i in (0, 1, 2, 5, 19):
        assert chunks.add(i)
    assert not chunks.add(5)
    restored = ChunkMap.from_hex(20, chunks.to_hex())
    assert restored.received == 5 and 19 in restored and 18 not in restored
    assert restored.missing(3) == [3, 4, 6]
    assert restored.missing_ranges(2) == [(3, 5), (6, 19)]
    for i in restored.missing(100):
        restored.add(i)
    assert restored.complete and restored.missing(5) == []
    with pytest.raises(IndexError):
        restored.add(20)


def test_a_manifest_never_carries_a_model_key(operator, trusted):
    # a manifest is retained on the broker: a model key in it would go to every subscriber
    with pytest.raises(UpdateError, match="model key"):
        manifest(config={"task": "detection", "key": "nvidia_tlt"})


def test_the_pinned_key_list_changes_only_by_a_signed_rotation(tmp_path, operator):
    path, pins = tmp_path / "keys.json", str(tmp_path / "state")

    def offer(keylist, signers):
        path.write_bytes(canonical.encode(keys.sign_keylist(keylist, signers)))
        return keys.pinned_keylist(str(path), pins, NOW)

    first = keys.make_keylist([operator.public], threshold=1, version=1)
    assert offer(first, [operator]).version == 1  # pinned on first use
    attacker = keys.generate()
    forged = keys.make_keylist([attacker.public], threshold=1, version=5)
    assert offer(forged, [attacker]).keys == first.keys  # signed by its own key only: refused
    new_key = keys.generate()
    second = keys.make_keylist([new_key.public], threshold=1, version=2)
    assert offer(second, [operator, new_key]).keys == second.keys  # rotated
    assert offer(first, [operator]).keys == second.keys  # rolled back file: pinned v2 holds
    path.unlink()
    assert keys.pinned_keylist(str(path), pins, NOW).version == 2
