import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage import KeyRing, LocalBackend, MemoryKeyStore, ObjectStore


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture
def keystore() -> MemoryKeyStore:
    return MemoryKeyStore()


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path / "objects")


@pytest.fixture
def store(backend: LocalBackend, keyring: KeyRing, keystore: MemoryKeyStore) -> ObjectStore:
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
