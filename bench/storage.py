"""Benchmark of the encrypted object store (issue 4, "Speed and memory").

Encrypts and decrypts a 1 GiB object through ``storage.ObjectStore`` and
prints, for each: MB/s, the ratio to the bare ChaCha20-Poly1305 primitive of
`cryptography` over the same bytes in the same run (target >= 0.7), and the
peak RSS of the process doing it (target < 100 MiB).  Also the time to
re-encrypt an object for a recipient at two sizes (target: independent of
size), and, to explain the figures, bare SHA-256 and the GA4GH reference
package over the same bytes.

Each phase runs in its own child process so that ``ru_maxrss`` is that
phase's peak.  Everything lives in a temporary folder deleted at the end.

    .venv/bin/python bench/storage.py [--size-mib 1024] [--dir /path/on/the/disk/to/test]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1 << 20
SEGMENT = 65536
CHUNK = MIB
SMALL_OBJECT = MIB


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _store(work: Path):
    from storage import KeyRing, LocalBackend, MemoryKeyStore, ObjectStore, WrappedKey

    keystore = MemoryKeyStore()
    keys_file = work / "keys.json"
    if keys_file.exists():
        for item in json.loads(keys_file.read_text()):
            keystore.add(
                WrappedKey(
                    item["scope"],
                    bytes.fromhex(item["pk"]),
                    bytes.fromhex(item["wrapped"]),
                    item["v"],
                )
            )
    store = ObjectStore(LocalBackend(work / "objects"), KeyRing.load(work / "kek.json"), keystore)
    return store, keys_file


def _info(work: Path, name: str):
    from storage import ObjectInfo

    return ObjectInfo(**json.loads((work / f"{name}.json").read_text()))


def phase_generate(work: Path, size: int) -> dict:
    from storage import KeyRing

    KeyRing.create_file(work / "kek.json")
    store, keys_file = _store(work)
    store.ensure_scope("bench-scope")
    keys_file.write_text(
        json.dumps(
            [
                {
                    "scope": k.scope_id,
                    "pk": k.public_key.hex(),
                    "wrapped": k.wrapped_private_key.hex(),
                    "v": k.kek_version,
                }
                for k in store.keystore.all()
            ]
        )
    )
    with open(work / "plain.bin", "wb") as f:
        for _ in range(size // CHUNK):
            f.write(os.urandom(CHUNK))
        f.write(os.urandom(size % CHUNK))
    return {}


def phase_bare(work: Path, size: int) -> dict:
    """Bare primitives over the same bytes: only the primitive calls are timed."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    aead = ChaCha20Poly1305(os.urandom(32))
    enc = dec = sha = 0.0
    with open(work / "plain.bin", "rb") as f:
        while chunk := f.read(CHUNK):
            for start in range(0, len(chunk), SEGMENT):
                segment = chunk[start : start + SEGMENT]
                nonce = os.urandom(12)
                t0 = time.perf_counter()
                sealed = aead.encrypt(nonce, segment, None)
                t1 = time.perf_counter()
                aead.decrypt(nonce, sealed, None)
                t2 = time.perf_counter()
                enc += t1 - t0
                dec += t2 - t1
            t0 = time.perf_counter()
            hashlib.sha256(chunk)
            sha += time.perf_counter() - t0
    return {
        "bare_encrypt_s": enc,
        "bare_decrypt_s": dec,
        "bare_sha256_s": sha,
        "bare_write_s": _timed_copy(work / "plain.bin", work / "copy.bin"),
    }


def _timed_copy(source: Path, target: Path) -> float:
    """Plain file copy + fsync on the same disk: what the disk allows."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        t0 = time.perf_counter()
        while chunk := src.read(CHUNK):
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
        elapsed = time.perf_counter() - t0
    target.unlink()
    return elapsed


def phase_reference(work: Path, size: int) -> dict:
    """The GA4GH reference package (libsodium through its C extension)."""
    from crypt4gh import lib

    from storage.c4gh_format import generate_keypair

    writer_sk, _ = generate_keypair()
    _, recipient_pk = generate_keypair()
    with open(work / "plain.bin", "rb") as src, open(os.devnull, "wb") as dst:
        t0 = time.perf_counter()
        lib.encrypt([(0, writer_sk, recipient_pk)], src, dst)
        return {"reference_encrypt_s": time.perf_counter() - t0}


def phase_format(work: Path, size: int) -> dict:
    """The Crypt4GH segment layer alone (framing, nonces, AEAD), timed like the bare phase.

    This is what the format costs over the primitive; the store's remaining cost is the
    integrity the issue asks for (two SHA-256 passes) and the disk.
    """
    from storage.c4gh_format import SegmentOpener, SegmentSealer

    key = os.urandom(32)
    sealer, opener = SegmentSealer(key), SegmentOpener([key])
    enc = dec = 0.0
    with open(work / "plain.bin", "rb") as f:
        while chunk := f.read(CHUNK):
            view = memoryview(chunk)
            for start in range(0, len(chunk), SEGMENT):
                t0 = time.perf_counter()
                sealed = sealer.seal(view[start : start + SEGMENT])
                t1 = time.perf_counter()
                opener.open(sealed)
                t2 = time.perf_counter()
                enc += t1 - t0
                dec += t2 - t1
    return {"format_encrypt_s": enc, "format_decrypt_s": dec}


def phase_encrypt(work: Path, size: int) -> dict:
    store, _ = _store(work)
    with open(work / "plain.bin", "rb") as f:
        t0 = time.perf_counter()
        info = store.put("bench-scope", f)
        elapsed = time.perf_counter() - t0
    (work / "big.json").write_text(json.dumps(info.__dict__))
    small = store.put("bench-scope", _Head(work / "plain.bin", SMALL_OBJECT))
    (work / "small.json").write_text(json.dumps(small.__dict__))
    return {"encrypt_s": elapsed}


class _NullWriter:
    def __init__(self) -> None:
        self.size = 0

    def write(self, data) -> None:
        self.size += len(data)

    def commit(self) -> int:
        return self.size

    def abort(self) -> None:
        pass


def phase_encrypt_cpu(work: Path, size: int) -> dict:
    """ObjectWriter into a backend that discards the bytes: the library's CPU cost alone."""
    from storage import ObjectWriter

    store, _ = _store(work)

    class NullBackend:
        def create(self, object_id: str) -> _NullWriter:
            return _NullWriter()

    writer = ObjectWriter(NullBackend(), "bench-scope", store.public_key("bench-scope"))
    with open(work / "plain.bin", "rb") as f:
        t0 = time.perf_counter()
        while chunk := f.read(CHUNK):
            writer.write(chunk)
        writer.commit()
        return {"encrypt_cpu_s": time.perf_counter() - t0}


def _timed_full_read(work: Path, authenticate_first: bool) -> float:
    store, _ = _store(work)
    info = _info(work, "big")
    t0 = time.perf_counter()
    with store.open(info, authenticate_first=authenticate_first) as reader:
        total = 0
        while chunk := reader.read(CHUNK):
            total += len(chunk)
    elapsed = time.perf_counter() - t0
    assert total == info.size
    return elapsed


def phase_decrypt(work: Path, size: int) -> dict:
    return {"decrypt_s": _timed_full_read(work, authenticate_first=True)}


def phase_decrypt_streaming(work: Path, size: int) -> dict:
    """``open(authenticate_first=False)``: no ciphertext pass before the first byte."""
    return {"decrypt_streaming_s": _timed_full_read(work, authenticate_first=False)}


def phase_reencrypt(work: Path, size: int) -> dict:
    from storage.c4gh_format import generate_keypair

    store, _ = _store(work)
    _, recipient = generate_keypair()
    result = {}
    for name in ("small", "big"):
        info = _info(work, name)
        best_header = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            chunks = store.reencrypt_for(info, recipient)
            next(chunks)
            best_header = min(best_header, time.perf_counter() - t0)
            chunks.close()
        t0 = time.perf_counter()
        streamed = sum(len(c) for c in store.reencrypt_for(info, recipient))
        result[f"reencrypt_{name}_header_s"] = best_header
        result[f"reencrypt_{name}_stream_s"] = time.perf_counter() - t0
        result[f"reencrypt_{name}_bytes"] = streamed
    return result


class _Head:
    """The first ``limit`` bytes of a file, as a readable stream."""

    def __init__(self, path: Path, limit: int) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed at the end of the stream
        self._left = limit

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._file.read(n)
        self._left -= len(data)
        if not data:
            self._file.close()
        return data


PHASES = {
    "generate": phase_generate,
    "bare": phase_bare,
    "reference": phase_reference,
    "format": phase_format,
    "encrypt": phase_encrypt,
    "encrypt_cpu": phase_encrypt_cpu,
    "decrypt": phase_decrypt,
    "decrypt_streaming": phase_decrypt_streaming,
    "reencrypt": phase_reencrypt,
}


def run_phase(name: str, work: Path, size: int) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--phase", name, "--work", str(work), "--size", str(size)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"phase {name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(size: int, r: dict[str, dict]) -> None:
    mb = size / 1e6
    bare, re = r["bare"], r["reencrypt"]

    def rate(seconds: float) -> float:
        return mb / seconds

    bare_enc, bare_dec = rate(bare["bare_encrypt_s"]), rate(bare["bare_decrypt_s"])
    enc, dec = rate(r["encrypt"]["encrypt_s"]), rate(r["decrypt"]["decrypt_s"])
    dec_s = rate(r["decrypt_streaming"]["decrypt_streaming_s"])
    enc_cpu = rate(r["encrypt_cpu"]["encrypt_cpu_s"])
    sha, disk = rate(bare["bare_sha256_s"]), rate(bare["bare_write_s"])
    ref = rate(r["reference"]["reference_encrypt_s"])
    fmt_enc = rate(r["format"]["format_encrypt_s"])
    fmt_dec = rate(r["format"]["format_decrypt_s"])
    lines = [
        f"object: {size / MIB:.0f} MiB; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs",
        f"bare ChaCha20-Poly1305 (cryptography): encrypt {bare_enc:6.0f} MB/s,"
        f" decrypt {bare_dec:6.0f} MB/s",
        f"bare SHA-256 (hashlib):                         {sha:6.0f} MB/s",
        f"plain file copy + fsync on the same disk:       {disk:6.0f} MB/s",
        f"reference crypt4gh package, encrypt:            {ref:6.0f} MB/s"
        f" (ratio to bare {ref / bare_enc:.2f})",
        f"Crypt4GH segment layer (storage.c4gh_format): encrypt {fmt_enc:6.0f} MB/s,"
        f" ratio to bare {fmt_enc / bare_enc:.2f}; decrypt {fmt_dec:6.0f} MB/s,"
        f" ratio to bare {fmt_dec / bare_dec:.2f} (target >= 0.7)",
        f"ceiling of a put (AEAD + 2 SHA-256 passes, no disk): one core"
        f" {1 / (1 / bare_enc + 2 / sha):6.0f} MB/s (ratio {1 / (1 + 2 * bare_enc / sha):.2f}),"
        f" {os.cpu_count()} cores perfectly shared"
        f" {(os.cpu_count() or 1) / (1 / bare_enc + 2 / sha):6.0f} MB/s",
        f"ObjectStore.put   (encrypt + 2 SHA-256 + write + fsync): {enc:6.0f} MB/s,"
        f" ratio to bare {enc / bare_enc:.2f} (target >= 0.7),"
        f" peak RSS {r['encrypt']['peak_rss_mib']:.1f} MiB (target < 100)",
        f"ObjectWriter to a null backend (encrypt + 2 SHA-256):   {enc_cpu:6.0f} MB/s,"
        f" ratio to bare {enc_cpu / bare_enc:.2f}",
        f"ObjectStore.open  (default: SHA-256 of the stored file first, then"
        f" decrypt + SHA-256): {dec:6.0f} MB/s, ratio to bare {dec / bare_dec:.2f}"
        f" (target >= 0.7), peak RSS {r['decrypt']['peak_rss_mib']:.1f} MiB (target < 100)",
        f"ObjectStore.open(authenticate_first=False) (decrypt + SHA-256): {dec_s:6.0f} MB/s,"
        f" ratio to bare {dec_s / bare_dec:.2f},"
        f" peak RSS {r['decrypt_streaming']['peak_rss_mib']:.1f} MiB",
        f"ceiling with SHA-256 on this CPU (hash on its own core): decrypt"
        f" {min(sha, bare_dec) / bare_dec:.2f} of bare",
    ]
    for name, mib in (("small", SMALL_OBJECT / MIB), ("big", size / MIB)):
        header_ms = re[f"reencrypt_{name}_header_s"] * 1e3
        stream_s = re[f"reencrypt_{name}_stream_s"]
        lines.append(
            f"reencrypt_for {mib:6.0f} MiB object: header rewrite {header_ms:.2f} ms,"
            f" streaming all of it {stream_s:.2f} s"
        )
    ratio = re["reencrypt_big_header_s"] / re["reencrypt_small_header_s"]
    lines.append(f"header rewrite time, big/small object: {ratio:.2f} (target ~1)")
    lines.append(
        "peak RSS per phase (MiB): "
        + ", ".join(f"{k} {v['peak_rss_mib']:.1f}" for k, v in r.items())
    )
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--dir", help="parent of the temporary folder (default: system temp)")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        result = PHASES[args.phase](Path(args.work), args.size)
        result["peak_rss_mib"] = _peak_rss_mib()
        print(json.dumps(result))
        return
    size = args.size_mib * MIB
    work = Path(tempfile.mkdtemp(prefix="storage-bench-", dir=args.dir))
    try:
        results = {name: run_phase(name, work, size) for name in PHASES}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(size, results)


if __name__ == "__main__":
    main()
