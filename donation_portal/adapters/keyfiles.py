"""Secret files under instance/: created once with mode 0600, never overwritten, never logged."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path


class KeyFileError(RuntimeError):
    pass


def create_secret_file(path: str | os.PathLike[str], nbytes: int = 32) -> bool:
    """Write ``nbytes`` random bytes (base64) to a new 0600 file; False if it already exists."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(base64.b64encode(secrets.token_bytes(nbytes)).decode("ascii") + "\n")
    return True


def read_secret_file(path: str | os.PathLike[str], nbytes: int = 32) -> bytes:
    target = Path(path)
    try:
        value = base64.b64decode(target.read_text(encoding="ascii").strip(), validate=True)
    except FileNotFoundError as exc:
        raise KeyFileError(
            f"key file {target} is missing (run `make run` once in development)"
        ) from exc
    except ValueError as exc:
        raise KeyFileError(f"key file {target} is not valid base64") from exc
    if len(value) != nbytes:
        raise KeyFileError(f"key file {target} must hold {nbytes} bytes")
    return value
