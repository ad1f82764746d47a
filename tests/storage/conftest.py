import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import Backend, KeyRing, LocalBackend, MemoryKeyStore, ObjectStore, S3Backend

BACKENDS = ["local", "s3"]
S3_START_TIMEOUT = 30.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "local_only: needs LocalBackend's file layout, so not run against S3"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test using ``backend`` (directly or through ``store``) runs against
    both backends, ids ``local`` and ``s3``, unless marked ``local_only``."""
    if "backend" in metafunc.fixturenames:
        kinds = ["local"] if metafunc.definition.get_closest_marker("local_only") else BACKENDS
        metafunc.parametrize("backend", kinds, indirect=True, ids=kinds)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_s3_client(endpoint_url: str):
    """A client with dummy credentials given explicitly: no environment, profile,
    proxy or retry configuration can redirect or slow the tests."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id="testing-key-id",
        aws_secret_access_key="testing-secret",  # noqa: S106
        region_name="us-east-1",
    )
    config = Config(
        retries={"mode": "standard", "max_attempts": 1},
        connect_timeout=5,
        read_timeout=30,
        proxies={},
    )
    return session.client("s3", endpoint_url=endpoint_url, config=config)


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"S3 test server: {message}", pytrace=False)
    pytest.skip(f"S3 test server: {message}")


def _start_moto(log_path: Path) -> tuple[subprocess.Popen, str] | None:
    """Start moto on a free port and wait until it answers; None if it does not."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    client = make_s3_client(endpoint)
    deadline = time.monotonic() + S3_START_TIMEOUT
    while process.poll() is None and time.monotonic() < deadline:
        try:
            client.list_buckets()
            return process, endpoint
        except Exception:  # not listening yet
            time.sleep(0.05)
    _stop(process)
    return None


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto in server mode on a free loopback port, for the whole session (a second
    try on another port if someone took the free port before moto bound it)."""
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError as exc:
        _unavailable(f"not installed ({exc.name}); pip install -e .[dev]")
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    started = _start_moto(log_path) or _start_moto(log_path)
    if started is None:
        tail = log_path.read_text(errors="replace")[-2000:]
        _unavailable(f"moto did not start:\n{tail}")
    process, endpoint = started
    try:
        yield endpoint
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def s3_client(s3_endpoint: str):
    """One client for the session (thread-safe; building one takes ~0.2 s)."""
    return make_s3_client(s3_endpoint)


@pytest.fixture
def new_s3_client():
    """Builds a client for another endpoint (e.g. one where no server listens)."""
    return make_s3_client


@pytest.fixture
def stopped_s3_endpoint() -> str:
    """A loopback endpoint where nothing listens: an S3 server that is down."""
    return f"http://127.0.0.1:{_free_port()}"


@pytest.fixture
def s3_bucket(s3_client) -> Iterator[str]:
    """A fresh bucket per test, emptied and removed afterwards."""
    bucket = f"test-{uuid.uuid4().hex}"
    s3_client.create_bucket(Bucket=bucket)
    yield bucket
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for entry in page.get("Contents", []):
            s3_client.delete_object(Bucket=bucket, Key=entry["Key"])
    for upload in s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        s3_client.abort_multipart_upload(
            Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
        )
    s3_client.delete_bucket(Bucket=bucket)


@pytest.fixture
def s3_backend(s3_client, s3_bucket: str) -> S3Backend:
    return S3Backend(s3_bucket, "objects/", client=s3_client)


@pytest.fixture
def local_backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path / "objects")


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Backend:
    """Parametrized by ``pytest_generate_tests``: ``local`` or ``s3``."""
    return request.getfixturevalue(f"{request.param}_backend")


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture
def keystore() -> MemoryKeyStore:
    return MemoryKeyStore()


@pytest.fixture
def store(backend: Backend, keyring: KeyRing, keystore: MemoryKeyStore) -> ObjectStore:
    return ObjectStore(backend, keyring, keystore)


@pytest.fixture
def scope(store: ObjectStore) -> str:
    store.ensure_scope("consent-1")
    return "consent-1"


class ReferenceCrypt4GH:
    """The GA4GH reference command-line tools, run in a private HOME."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.bin = Path(sys.executable).parent
        self.env = {"HOME": str(home), "PATH": os.environ.get("PATH", "")}

    def run(self, tool: str, *args: str, stdin: bytes = b"", passphrase: str | None = None):
        env = dict(self.env)
        if passphrase is not None:
            env["C4GH_PASSPHRASE"] = passphrase
        return subprocess.run(
            [str(self.bin / tool), *args], input=stdin, capture_output=True, env=env, timeout=120
        )

    def decrypt(self, sk: Path, data: bytes, passphrase: str | None = None):
        return self.run("crypt4gh", "decrypt", "--sk", str(sk), stdin=data, passphrase=passphrase)

    def encrypt(self, recipient_pk: Path, data: bytes) -> bytes:
        done = self.run("crypt4gh", "encrypt", "--recipient_pk", str(recipient_pk), stdin=data)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def keygen(self, name: str) -> tuple[Path, Path]:
        """An unprotected key pair (the tool prompts on a terminal for a passphrase)."""
        sk, pk = self.home / f"{name}.sec", self.home / f"{name}.pub"
        done = self.run("crypt4gh-keygen", "--sk", str(sk), "--pk", str(pk), "--nocrypt")
        assert done.returncode == 0, done.stderr
        return sk, pk


@pytest.fixture
def reference(tmp_path: Path) -> ReferenceCrypt4GH:
    home = tmp_path / "home"
    home.mkdir()
    return ReferenceCrypt4GH(home)
