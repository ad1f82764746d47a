"""S3Backend against moto in server mode: multipart writes, the no-clobber guard,
ranged reads, foreign keys, stale uploads, error mapping, and the ObjectStore
features whose generic tests are local-only because they edit files directly."""

import collections
import dataclasses
import hashlib
import io
import os
import random
import threading
import time
from pathlib import Path

import pydicom
import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError

from storage import (
    SEGMENT_SIZE,
    Backend,
    IntegrityError,
    KeyRing,
    MemoryKeyStore,
    ObjectNotFound,
    ObjectStore,
    S3Backend,
    StorageError,
    StorageFull,
    StorageUnavailable,
    load_public_key_file,
    new_object_id,
    new_quarantine_scope,
    sweep_quarantine,
)
from storage.c4gh_format import read_header
from storage.s3 import MIN_PART_SIZE, _mapped

MiB = 1 << 20
HOUR = 3600.0
SECRETS = ("testing-key-id", "testing-secret")


class Recording:
    """A boto3 client that counts calls per operation, records GET ranges, can make
    chosen operations fail, and pages listings in pages of two keys."""

    def __init__(self, client, fail: dict[str, Exception] | None = None) -> None:
        self._client = client
        self.fail = fail or {}
        self.calls: collections.Counter[str] = collections.Counter()
        self.ranges: list[str] = []

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if name == "get_paginator":
            return lambda operation: _SmallPages(attr(operation), self, operation)
        if name.startswith("_") or not callable(attr):
            return attr

        def call(*args, **kwargs):
            self.calls[name] += 1
            if name == "get_object":
                self.ranges.append(kwargs.get("Range"))
            if name in self.fail:
                raise self.fail[name]
            return attr(*args, **kwargs)

        return call


@dataclasses.dataclass
class _SmallPages:
    paginator: object
    recording: Recording
    operation: str

    def paginate(self, **kwargs):
        for page in self.paginator.paginate(**kwargs, PaginationConfig={"PageSize": 2}):
            self.recording.calls[f"page:{self.operation}"] += 1
            yield page


@pytest.fixture
def recording(s3_client) -> Recording:
    return Recording(s3_client)


@pytest.fixture
def s3(recording: Recording, s3_bucket: str) -> S3Backend:
    """Smallest parts S3 allows, and a small read-ahead, to exercise both paths."""
    return S3Backend(
        s3_bucket, "objects/", client=recording, part_size=MIN_PART_SIZE, read_ahead=256 << 10
    )


@pytest.fixture
def s3_store(s3: S3Backend) -> ObjectStore:
    store = ObjectStore(s3, KeyRing.generate(), MemoryKeyStore())
    store.ensure_scope("consent-1")
    return store


def _raw(s3: S3Backend, object_id: str) -> bytes:
    return s3.client.get_object(Bucket=s3.bucket, Key=s3.key_of(object_id))["Body"].read()


def _overwrite(s3: S3Backend, object_id: str, content: bytes) -> None:
    """What an attacker or a broken tool with bucket write access could do."""
    s3.client.put_object(Bucket=s3.bucket, Key=s3.key_of(object_id), Body=content)


def _uploads(s3: S3Backend) -> list[dict]:
    return s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])


def test_is_a_backend_with_the_documented_key_layout(s3: S3Backend) -> None:
    assert isinstance(s3, Backend)
    object_id = new_object_id()
    s3.put(object_id, [b"x"])
    assert s3.key_of(object_id) == f"objects/{object_id[:2]}/{object_id}.c4gh"
    assert _raw(s3, object_id) == b"x"


def test_small_object_is_one_conditional_put(s3: S3Backend, recording: Recording) -> None:
    object_id = new_object_id()
    assert s3.put(object_id, [b"a" * 1000] * 100) == 100_000
    assert recording.calls["put_object"] == 1
    assert recording.calls["create_multipart_upload"] == 0


def test_object_larger_than_the_part_size_is_a_multipart_upload(
    s3: S3Backend, recording: Recording
) -> None:
    data = os.urandom(12 * MiB + 12345)
    object_id = new_object_id()
    writer = s3.create(object_id)
    for start in range(0, len(data), 1_000_003):
        writer.write(memoryview(data)[start : start + 1_000_003])
    assert recording.calls["upload_part"] == 2  # two full parts so far, the rest buffered
    assert list(s3.list()) == []  # invisible until commit
    assert writer.commit() == len(data)
    assert recording.calls["create_multipart_upload"] == 1
    assert recording.calls["upload_part"] == 3
    assert recording.calls["complete_multipart_upload"] == 1
    assert recording.calls["put_object"] == 0
    assert s3.stat(object_id) == len(data)
    head = s3.client.head_object(Bucket=s3.bucket, Key=s3.key_of(object_id))
    assert head["ETag"].endswith('-3"')
    assert _raw(s3, object_id) == data
    assert _uploads(s3) == []


def test_abort_leaves_no_object_and_no_pending_upload(s3: S3Backend) -> None:
    object_id = new_object_id()
    writer = s3.create(object_id)
    writer.write(os.urandom(MIN_PART_SIZE + 10))
    assert len(_uploads(s3)) == 1
    writer.abort()
    assert _uploads(s3) == [] and list(s3.list()) == []
    with pytest.raises(ObjectNotFound):
        s3.stat(object_id)
    with pytest.raises(StorageError):
        writer.commit()


def test_failing_store_write_leaves_nothing(s3_store: ObjectStore, s3: S3Backend) -> None:
    with pytest.raises(RuntimeError), s3_store.writer("consent-1") as writer:
        writer.write(os.urandom(MIN_PART_SIZE + SEGMENT_SIZE))
        raise RuntimeError("upload interrupted")
    assert list(s3.list()) == [] and _uploads(s3) == []


@pytest.mark.parametrize("first", ["small", "multipart"])
@pytest.mark.parametrize("second", ["small", "multipart"])
def test_a_concurrent_second_writer_to_the_same_id_fails(
    s3: S3Backend, first: str, second: str
) -> None:
    sizes = {"small": 1000, "multipart": MIN_PART_SIZE + 1000}
    object_id = new_object_id()
    winner, loser = s3.create(object_id), s3.create(object_id)
    winner_data, loser_data = os.urandom(sizes[first]), os.urandom(sizes[second])
    winner.write(winner_data)
    loser.write(loser_data)
    assert winner.commit() == len(winner_data)
    with pytest.raises(StorageError, match="already exists") as err:
        loser.commit()
    assert err.value.object_id == object_id
    assert _raw(s3, object_id) == winner_data
    assert _uploads(s3) == []  # the loser's parts are gone too


def test_open_seeks_and_reads_like_bytes(s3: S3Backend, recording: Recording) -> None:
    data = os.urandom(MiB + 777)  # four read-ahead buffers
    object_id = new_object_id()
    s3.put(object_id, [data])
    rng = random.Random(1234)
    expected = io.BytesIO(data)
    with s3.open(object_id) as f:
        assert f.readable() and f.seekable()
        for _ in range(60):
            whence = rng.choice([os.SEEK_SET, os.SEEK_CUR, os.SEEK_END])
            if whence == os.SEEK_SET:
                offset = rng.randrange(len(data) + 1000)
            elif whence == os.SEEK_CUR:
                offset = rng.randrange(-expected.tell(), len(data) - expected.tell() + 100)
            else:
                offset = -rng.randrange(len(data))
            assert f.seek(offset, whence) == expected.seek(offset, whence)
            size = rng.choice([0, 1, 7, 1000, 64 << 10, 300_000, 1 << 20, -1])
            assert f.read(size) == expected.read(size)
            assert f.tell() == expected.tell()
        buffer = bytearray(5000)
        f.seek(len(data) - 100)
        assert f.readinto(buffer) == 100 and buffer[:100] == data[-100:]
    assert all(r.startswith("bytes=") for r in recording.ranges)
    with pytest.raises(ValueError):
        f.read(1)


def test_reads_are_few_read_ahead_sized_requests(s3_store: ObjectStore, s3: S3Backend) -> None:
    """ObjectStore.open hashes from 0, then reads header and segments: with the
    read-ahead buffer that is about two passes of read-ahead-sized GETs."""
    data = os.urandom(3 * MiB)
    info = s3_store.put("consent-1", io.BytesIO(data))
    s3.client.ranges.clear()
    assert s3_store.read_bytes(info) == data
    passes = -(-info.stored_size // s3.read_ahead)
    assert len(s3.client.ranges) <= 2 * passes + 2
    sizes = [int(b) - int(a) + 1 for a, b in (r[6:].split("-") for r in s3.client.ranges)]
    assert sum(size < s3.read_ahead for size in sizes) <= 4  # only tails are short


@pytest.mark.parametrize("size", [0, 1, SEGMENT_SIZE - 1, SEGMENT_SIZE, 3 * SEGMENT_SIZE + 7])
def test_store_round_trip_and_the_stored_bytes_match_the_records(
    s3_store: ObjectStore, s3: S3Backend, size: int
) -> None:
    data = os.urandom(size)
    info = s3_store.put("consent-1", io.BytesIO(data))
    stored = _raw(s3, info.object_id)
    assert info.stored_size == len(stored) == s3.stat(info.object_id)
    assert info.stored_sha256 == hashlib.sha256(stored).hexdigest()
    assert stored.startswith(b"crypt4gh\x01\x00\x00\x00")
    assert s3_store.read_bytes(info) == data


def test_no_plaintext_or_patient_name_in_the_bucket(s3_store: ObjectStore, s3: S3Backend) -> None:
    path = pydicom.data.get_testdata_file("CT_small.dcm")
    name = str(pydicom.dcmread(path).PatientName).encode()
    with open(path, "rb") as f:
        s3_store.put("consent-1", f)
    listing = s3.client.list_objects_v2(Bucket=s3.bucket)["Contents"]
    assert listing
    for entry in listing:
        content = s3.client.get_object(Bucket=s3.bucket, Key=entry["Key"])["Body"].read()
        assert b"DICM" not in content and name not in content
        assert name.decode() not in entry["Key"]


def test_list_ignores_foreign_keys_and_pages(s3: S3Backend, recording: Recording) -> None:
    ids = sorted(new_object_id() for _ in range(5))
    for object_id in ids:
        s3.put(object_id, [b"x"])
    other = new_object_id()
    foreign = [
        "README",
        "objects/README",
        f"objects/{ids[0][:2]}/notes.txt",
        f"objects/{ids[0][:2]}/{ids[0]}.c4gh.part",
        f"objects/{ids[0][:2]}/{ids[0].upper()}.c4gh",
        f"objects/zz/{other}.c4gh",  # shard that does not match the ID
        f"objects/{other[:2]}/{other}",
        f"other/{other[:2]}/{other}.c4gh",  # another prefix
        f"{other[:2]}/{other}.c4gh",  # no prefix
    ]
    for key in foreign:
        s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b"not ours")
    assert list(s3.list()) == ids
    assert recording.calls["page:list_objects_v2"] == 6  # 11 keys under the prefix, by two
    assert list(S3Backend(s3.bucket, "other/", client=s3.client).list()) == [other]
    assert list(S3Backend(s3.bucket, client=s3.client).list()) == [other]


def test_remove_stale_partials_aborts_old_uploads_under_the_prefix(s3: S3Backend) -> None:
    """moto reports every upload as initiated on 2010-11-10, so all are "old"; a
    limit reaching back before 1970 shows that the age is compared."""
    crashed = s3.create(new_object_id())
    crashed.write(os.urandom(MIN_PART_SIZE))  # one part uploaded, then the process died
    for key in (s3.key_of(new_object_id()), "objects/README", "other/x"):
        s3.client.create_multipart_upload(Bucket=s3.bucket, Key=key)
    assert len(_uploads(s3)) == 4
    assert s3.remove_stale_partials(older_than_seconds=time.time() + HOUR) == 0
    assert s3.remove_stale_partials(older_than_seconds=HOUR) == 2
    assert sorted(u["Key"] for u in _uploads(s3)) == ["objects/README", "other/x"]
    assert s3.remove_stale_partials(older_than_seconds=HOUR) == 0
    crashed.write(b"late")
    with pytest.raises(StorageError):  # its upload is gone: fails, never half-appears
        crashed.commit()
    assert list(s3.list()) == []


def test_sweep_quarantine_on_s3(s3_store: ObjectStore, s3: S3Backend) -> None:
    now = time.time()
    abandoned = new_quarantine_scope(now=now - 2 * HOUR)
    for scope in (abandoned, "consent-2"):
        s3_store.ensure_scope(scope)
    left = s3_store.put(abandoned, io.BytesIO(b"raw upload"))
    kept = s3_store.put("consent-2", io.BytesIO(b"de-identified"))
    s3.create(new_object_id()).write(os.urandom(MIN_PART_SIZE))  # a crashed write

    dry = sweep_quarantine(s3_store, [kept.object_id], HOUR, now=now + 2 * HOUR, dry_run=True)
    assert dry.deleted_objects == [left.object_id] and len(_uploads(s3)) == 1
    fresh = sweep_quarantine(s3_store, [kept.object_id], HOUR)  # objects too young to go
    assert fresh.shredded_scopes == [abandoned] and fresh.deleted_objects == []
    assert fresh.removed_partials == 1 and _uploads(s3) == []
    later = sweep_quarantine(s3_store, [kept.object_id], HOUR, now=now + 2 * HOUR)
    assert later.deleted_objects == [left.object_id]
    assert sorted(s3.list()) == sorted([kept.object_id])
    assert s3_store.read_bytes(kept) == b"de-identified"


def test_verify_on_s3(s3_store: ObjectStore, s3: S3Backend) -> None:
    s3_store.ensure_scope("b")
    good = s3_store.put("consent-1", io.BytesIO(os.urandom(MIN_PART_SIZE + 100)))
    missing = s3_store.put("consent-1", io.BytesIO(os.urandom(100)))
    corrupted = s3_store.put("consent-1", io.BytesIO(os.urandom(3 * SEGMENT_SIZE)))
    unreadable = s3_store.put("b", io.BytesIO(os.urandom(100)))
    orphan = new_object_id()
    s3.put(orphan, [b"left over"])
    s3.delete(missing.object_id)
    content = bytearray(_raw(s3, corrupted.object_id))
    content[len(content) // 2] ^= 1
    _overwrite(s3, corrupted.object_id, bytes(content))
    s3_store.keystore.destroy("b")

    report = s3_store.verify([good, missing, corrupted, unreadable])

    assert report.checked == 4
    assert report.missing == [missing.object_id]
    assert report.orphaned == [orphan]
    assert report.corrupted == [corrupted.object_id]
    assert report.unreadable == [unreadable.object_id]


def test_reencrypt_for_on_s3(s3_store: ObjectStore, s3: S3Backend, reference) -> None:
    data = os.urandom(2 * SEGMENT_SIZE + 1)
    info = s3_store.put("consent-1", io.BytesIO(data))
    recipient_sk, recipient_pk = reference.keygen("researcher")
    released = b"".join(s3_store.reencrypt_for(info, load_public_key_file(recipient_pk)))
    done = reference.decrypt(recipient_sk, released)
    assert done.returncode == 0, done.stderr
    assert done.stdout == data
    stored = _raw(s3, info.object_id)
    old_header = read_header(io.BytesIO(stored)).length
    assert released[read_header(io.BytesIO(released)).length :] == stored[old_header:]

    tampered = bytearray(stored)
    tampered[-100] ^= 0x40
    _overwrite(s3, info.object_id, bytes(tampered))
    with pytest.raises(IntegrityError) as err:
        for _ in s3_store.reencrypt_for(info, load_public_key_file(recipient_pk)):
            pass
    assert err.value.object_id == info.object_id


def test_put_encrypted_from_the_reference_tool(
    s3_store: ObjectStore, s3: S3Backend, reference, tmp_path: Path
) -> None:
    from storage import write_public_key_file

    data = os.urandom(SEGMENT_SIZE + 5)
    pk = tmp_path / "scope.pub"
    write_public_key_file(s3_store.public_key("consent-1"), pk)
    encrypted = reference.encrypt(pk, data)
    info = s3_store.put_encrypted("consent-1", io.BytesIO(encrypted))
    assert _raw(s3, info.object_id) == encrypted
    assert s3_store.read_bytes(info) == data


def test_an_object_replaced_while_open_is_not_mixed(s3: S3Backend) -> None:
    object_id = new_object_id()
    s3.put(object_id, [b"a" * MiB])
    with s3.open(object_id) as f:
        assert f.read(10) == b"a" * 10
        _overwrite(s3, object_id, b"b" * MiB)
        with pytest.raises(StorageError, match="replaced"):
            f.read()


# -- errors ------------------------------------------------------------------------------


def _assert_safe(error: StorageError) -> None:
    text = str(error) + repr(error.args)
    for secret in SECRETS:
        assert secret not in text
    assert "127.0.0.1" not in text and "Traceback" not in text


def test_a_nonexistent_bucket_is_a_storage_error_not_a_missing_object(s3_client) -> None:
    backend = S3Backend("no-such-bucket-here", client=s3_client, part_size=MIN_PART_SIZE)
    object_id = new_object_id()
    calls = [
        lambda: backend.put(object_id, [b"x"]),
        lambda: backend.put(object_id, [os.urandom(backend.part_size)]),
        lambda: backend.open(object_id),
        lambda: backend.stat(object_id),
        lambda: backend.delete(object_id),
        lambda: list(backend.list()),
        lambda: backend.remove_stale_partials(0),
    ]
    for call in calls:
        with pytest.raises(StorageError) as err:
            call()
        assert type(err.value) is StorageError and "bucket does not exist" in str(err.value)
        _assert_safe(err.value)


def test_a_stopped_server_is_storage_unavailable(
    s3_bucket: str, new_s3_client, stopped_s3_endpoint: str
) -> None:
    backend = S3Backend(s3_bucket, client=new_s3_client(stopped_s3_endpoint))
    object_id = new_object_id()
    writer = backend.create(object_id)
    writer.write(b"x")
    calls = [
        writer.commit,
        lambda: backend.open(object_id),
        lambda: backend.stat(object_id),
        lambda: backend.modified(object_id),
        lambda: backend.delete(object_id),
        lambda: list(backend.list()),
        lambda: backend.remove_stale_partials(0),
    ]
    for call in calls:
        with pytest.raises(StorageUnavailable) as err:
            call()
        _assert_safe(err.value)


def test_a_full_backend_surfaces_as_storage_full_and_leaves_nothing(
    s3_client, s3_bucket: str
) -> None:
    quota = ClientError(
        {"Error": {"Code": "QuotaExceeded", "Message": "x"}, "ResponseMetadata": {}}, "UploadPart"
    )
    client = Recording(s3_client, fail={"upload_part": quota})
    backend = S3Backend(s3_bucket, client=client, part_size=MIN_PART_SIZE)
    store = ObjectStore(backend, KeyRing.generate(), MemoryKeyStore())
    store.ensure_scope("s")
    with pytest.raises(StorageFull):
        store.put("s", io.BytesIO(os.urandom(MIN_PART_SIZE + MiB)))
    assert list(backend.list()) == []
    assert client.calls["abort_multipart_upload"] == 1 and _uploads(backend) == []


def _client_error(code: str, status: int, **extra) -> ClientError:
    error = {"Code": code, "Message": "Bucket test-secret-bucket key objects/ab/x", **extra}
    return ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_client_error("NoSuchKey", 404), ObjectNotFound),
        (_client_error("404", 404), ObjectNotFound),
        (_client_error("QuotaExceeded", 403), StorageFull),
        (_client_error("XMinioStorageFull", 507), StorageFull),
        (_client_error("EntityTooLarge", 400), StorageFull),
        (_client_error("Anything", 507), StorageFull),
        (_client_error("SlowDown", 503), StorageUnavailable),
        (_client_error("InternalError", 500), StorageUnavailable),
        (_client_error("Throttling", 400), StorageUnavailable),
        (_client_error("TooManyRequests", 429), StorageUnavailable),
        (_client_error("AccessDenied", 403), StorageError),
        (_client_error("SignatureDoesNotMatch", 403, AWSAccessKeyId=SECRETS[0]), StorageError),
        (_client_error("Weird code <testing-secret>", 400), StorageError),
        (ConnectTimeoutError(endpoint_url="http://127.0.0.1:1/testing-secret"), StorageUnavailable),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1/testing-secret"), StorageUnavailable),
    ],
)
def test_error_mapping(error: Exception, expected: type[StorageError]) -> None:
    mapped = _mapped(error, "GetObject", "ab" * 16)
    assert type(mapped) is expected
    assert mapped.object_id == "ab" * 16
    _assert_safe(mapped)
    assert "test-secret-bucket" not in str(mapped) and "objects/" not in str(mapped)


def test_settings_are_checked_and_credentials_not_kept(s3_endpoint: str, s3_bucket: str) -> None:
    for bad in ({"prefix": "objects"}, {"prefix": "/objects/"}, {"part_size": MIN_PART_SIZE - 1}):
        with pytest.raises(StorageError):
            S3Backend(s3_bucket, **bad, client=object())
    with pytest.raises(StorageError):
        S3Backend(s3_bucket, client=object(), endpoint_url=s3_endpoint)
    backend = S3Backend(
        s3_bucket,
        "objects/",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        access_key_id=SECRETS[0],
        secret_access_key=SECRETS[1],
    )
    object_id = new_object_id()
    backend.put(object_id, [b"built from settings"])
    with backend.open(object_id) as f:
        assert f.read() == b"built from settings"
    assert SECRETS[1] not in repr(backend) and SECRETS[1] not in repr(vars(backend))


def test_writers_in_threads_share_one_backend(s3: S3Backend) -> None:
    ids = [new_object_id() for _ in range(8)]
    threads = [threading.Thread(target=s3.put, args=(i, [i.encode()])) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(s3.list()) == sorted(ids)


def test_a_writer_whose_part_failed_can_never_commit(s3_client, s3_bucket: str) -> None:
    slow_down = ClientError(
        {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "UploadPart"
    )
    client = Recording(s3_client, fail={"upload_part": slow_down})
    backend = S3Backend(s3_bucket, client=client, part_size=MIN_PART_SIZE)
    writer = backend.create(new_object_id())
    with pytest.raises(StorageUnavailable):
        writer.write(os.urandom(MIN_PART_SIZE + 1))
    with pytest.raises(StorageError):
        writer.commit()
    assert client.calls["complete_multipart_upload"] == client.calls["put_object"] == 0
    assert list(backend.list()) == [] and _uploads(backend) == []
