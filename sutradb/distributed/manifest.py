"""The shard manifest and the global id scheme of a sharded database.

A sharded database is a directory holding N shard databases (each a normal sutradb
database that :func:`sutradb.open` reads alone), the shared PQ codebook and a small
manifest that names them::

    corpus.shards/
      shards.json          the manifest (this module): the commit point of a learn job
      codebook.pq          the shared codebook (ProductQuantizer.save: msgpack)
      shard-00000.sutra/   shard 0 (a database directory)
      shard-00001.sutra/   ...

The manifest is JSON (a few hundred bytes per shard, readable with ``cat``)::

    {"format": "sutradb-sharded", "version": 1,
     "dim": 384, "metric": "cosine",
     "embedder": {"name": "sentence-transformers:all-MiniLM-L6-v2", "dim": 384},
     "ids": {"scheme": "block-interleaved", "block": 4096, "shards": 2},
     "shards": [{"path": "shard-00000.sutra", "concepts": 4096}, ...],
     "concepts": 6000, "partitions": 2,
     "codebook": {"path": "codebook.pq", "sha256": "...", "m": 48, "nbits": 8,
                  "seed": 0, "training_error": 0.0123},
     "job": {...the parameters of the learn job...},
     "checksum": "sha256:<hex>"}

``checksum`` is the SHA-256 of the canonical JSON (sorted keys, no spaces) of every
other field. It is written atomically (temporary file, fsync, ``os.replace``, fsync of
the directory); a damaged or foreign file raises
:class:`~sutradb.errors.CorruptDatabaseError`. Shard and codebook paths are relative
to the manifest's directory and may not leave it.

Global ids
----------
Each shard allocates its own local ids (0, 1, 2, ...). The sharded view names a
concept by a global id computed from ``(shard, local)`` with the bijection of
:class:`IdScheme` (block-interleaved with block ``B`` over ``N`` shards)::

    global = ((local // B) * N + shard) * B + local % B
    shard  = (global // B) % N,   local = (global // B // N) * B + global % B

A learn job sends partition ``p`` (rows ``p*B .. p*B+B-1`` of the source, ``B`` =
the partition size) to shard ``p % N``, so the global id of a concept is its row in
the source: the id that one ``db.add`` of the same texts in one process would have
given it. With ``B = 1`` the scheme is ``global = local * N + shard`` (what
:func:`sutradb.open_sharded` uses for a plain list of shard paths).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, overload

import numpy as np

from ..errors import CorruptDatabaseError, DatabaseNotFoundError, InvalidArgumentError
from ..storage import osio

__all__ = ["MANIFEST_NAME", "CODEBOOK_NAME", "FORMAT", "VERSION", "IdScheme", "shard_name",
           "read_manifest", "write_manifest", "manifest_checksum", "file_sha256",
           "find_manifest"]

MANIFEST_NAME = "shards.json"
CODEBOOK_NAME = "codebook.pq"
FORMAT = "sutradb-sharded"
VERSION = 1
ID_SCHEME = "block-interleaved"
#: The largest manifest :func:`read_manifest` reads (about 100 bytes per shard).
MAX_MANIFEST_BYTES = 16 << 20
METRICS = ("cosine", "ip", "l2")


def shard_name(i: int) -> str:
    """Directory name of shard ``i`` inside a sharded database."""
    return f"shard-{i:05d}.sutra"


class IdScheme:
    """The bijection between global ids and ``(shard, local id)`` pairs.

    Parameters
    ----------
    shards : int
        Number of shards ``N``.
    block : int
        Block ``B``: ``B`` consecutive global ids live in one shard, the next ``B`` in
        the next shard (round robin). A learn job uses its partition size.

    Examples
    --------
    >>> s = IdScheme(shards=2, block=3)
    >>> [s.to_global(i // 3 % 2, (i // 6) * 3 + i % 3) for i in range(8)]
    [0, 1, 2, 3, 4, 5, 6, 7]
    >>> s.to_local(4)
    (1, 1)
    """

    __slots__ = ("shards", "block")

    def __init__(self, shards: int, block: int) -> None:
        for name, v in (("shards", shards), ("block", block)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise InvalidArgumentError(f"{name} must be a positive integer, got {v!r}")
        self.shards = int(shards)
        self.block = int(block)

    def __repr__(self) -> str:
        return f"IdScheme(shards={self.shards}, block={self.block})"

    @overload
    def to_global(self, shard: int | np.integer[Any], local: int | np.integer[Any]) -> int: ...
    @overload
    def to_global(self, shard: int | np.integer[Any], local: np.ndarray) -> np.ndarray: ...

    def to_global(self, shard: int | np.integer[Any], local: int | np.integer[Any] | np.ndarray
                  ) -> int | np.ndarray:
        """Global id(s) of local id(s) of a shard (ints or int64 arrays; -1 stays -1)."""
        B, N = self.block, self.shards
        if isinstance(local, np.ndarray):
            loc = local.astype(np.int64, copy=False)
            g = ((loc // B) * N + shard) * B + loc % B
            return np.where(loc < 0, -1, g)
        local = int(local)
        return ((local // B) * N + int(shard)) * B + local % B

    @overload
    def to_local(self, gid: int | np.integer[Any]) -> tuple[int, int]: ...
    @overload
    def to_local(self, gid: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def to_local(self, gid: int | np.integer[Any] | np.ndarray
                 ) -> tuple[int, int] | tuple[np.ndarray, np.ndarray]:
        """``(shard, local id)`` of a global id (an int >= 0), or of an int64 array
        (then a pair of arrays)."""
        B, N = self.block, self.shards
        if isinstance(gid, np.ndarray):
            g = gid.astype(np.int64, copy=False)
            blk = g // B
            return blk % N, (blk // N) * B + g % B
        g = int(gid)  # type: ignore[assignment]  # one id (an array above)
        blk = g // B
        return blk % N, (blk // N) * B + g % B

    def as_dict(self) -> dict[str, Any]:
        return {"scheme": ID_SCHEME, "block": self.block, "shards": self.shards}


# --------------------------------------------------------------------------- checksums

def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def manifest_checksum(body: dict[str, Any]) -> str:
    """``"sha256:<hex>"`` of the canonical JSON of ``body`` (without ``checksum``)."""
    body = {k: v for k, v in body.items() if k != "checksum"}
    return "sha256:" + hashlib.sha256(_canonical(body)).hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Best-effort fsync of a directory's entries (nothing on Windows; errors ignored)."""
    try:
        osio.sync_dir(directory)
    except OSError:  # pragma: no cover
        pass


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same directory,
    fsync, atomic replace, fsync of the directory (:mod:`sutradb.storage.osio`)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    osio.replace_file(tmp, path)
    fsync_dir(path.parent)


# --------------------------------------------------------------------------- read/write

def write_manifest(directory: str | os.PathLike[str], body: dict[str, Any]) -> Path:
    """Validate ``body``, add ``format``, ``version`` and ``checksum`` and write it
    atomically as ``directory/shards.json``. Returns the manifest path."""
    body = dict(body)
    body["format"] = FORMAT
    body["version"] = VERSION
    body.pop("checksum", None)
    _validate(body, "<new manifest>")
    body["checksum"] = manifest_checksum(body)
    path = Path(directory) / MANIFEST_NAME
    atomic_write(path, json.dumps(body, sort_keys=True, indent=1, ensure_ascii=True).encode("ascii") + b"\n")
    return path


def find_manifest(path: str | os.PathLike[str]) -> Path:
    """The manifest file of ``path`` (a sharded database directory or the manifest
    itself). :class:`~sutradb.errors.DatabaseNotFoundError` when there is none."""
    p = Path(os.fspath(path))
    if p.is_dir():
        p = p / MANIFEST_NAME
    if not p.is_file():
        raise DatabaseNotFoundError(
            f"no sharded database at {os.fspath(path)!r} (no {MANIFEST_NAME}: the learn job "
            f"has not completed, or this is not a sharded database)")
    return p


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a manifest (``path``: the file or its directory).

    Returns
    -------
    dict
        The manifest, with ``"_dir"`` (the absolute directory it lives in) added.

    Raises
    ------
    DatabaseNotFoundError
        There is no manifest.
    CorruptDatabaseError
        It is not valid JSON, fails its checksum, has another format tag or version,
        or a malformed field.
    """
    p = find_manifest(path)
    size = p.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise CorruptDatabaseError(f"{p}: {size} bytes is too large for a shard manifest")
    raw = p.read_bytes()
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CorruptDatabaseError(f"{p}: not a valid shard manifest (bad JSON: {e})") from None
    if not isinstance(body, dict):
        raise CorruptDatabaseError(f"{p}: not a valid shard manifest (not an object)")
    if body.get("format") != FORMAT:
        raise CorruptDatabaseError(f"{p}: not a sutradb shard manifest (format tag "
                                   f"{body.get('format')!r})")
    if body.get("version") != VERSION:
        raise CorruptDatabaseError(f"{p}: unsupported shard manifest version {body.get('version')!r}")
    if body.get("checksum") != manifest_checksum(body):
        raise CorruptDatabaseError(f"{p}: shard manifest checksum mismatch (damaged file)")
    _validate(body, str(p))
    body["_dir"] = str(p.parent.resolve())
    return body


def _is_int(v: object, lo: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _relative(rel: object, where: str, what: str) -> None:
    if not isinstance(rel, str) or not rel:
        raise CorruptDatabaseError(f"{where}: {what} path must be a non-empty string")
    pp = Path(rel)
    if pp.is_absolute() or ".." in pp.parts or rel.startswith(("/", "\\")):
        raise CorruptDatabaseError(f"{where}: {what} path {rel!r} leaves the manifest's directory")


def _validate(b: dict[str, Any], where: str) -> None:
    def bad(why: str) -> CorruptDatabaseError:
        return CorruptDatabaseError(f"{where}: not a valid shard manifest ({why})")

    if not _is_int(b.get("dim"), 0):
        raise bad("dim")
    if b.get("metric") not in METRICS:
        raise bad("metric")
    emb = b.get("embedder")
    if emb is not None and not (isinstance(emb, dict) and isinstance(emb.get("name"), str)
                                and _is_int(emb.get("dim"), 1)):
        raise bad("embedder")
    ids = b.get("ids")
    if not (isinstance(ids, dict) and ids.get("scheme") == ID_SCHEME
            and _is_int(ids.get("block"), 1) and _is_int(ids.get("shards"), 1)):
        raise bad("ids")
    shards = b.get("shards")
    if not isinstance(shards, list) or len(shards) != ids["shards"]:
        raise bad("shards (one entry per shard)")
    seen = set()
    for s in shards:
        if not isinstance(s, dict) or not _is_int(s.get("concepts"), 0):
            raise bad("shard entry")
        _relative(s.get("path"), where, "shard")
        if s["path"] in seen:
            raise bad(f"shard {s['path']!r} named twice")
        seen.add(s["path"])
    if not _is_int(b.get("concepts"), 0) or b["concepts"] != sum(s["concepts"] for s in shards):
        raise bad("concepts (not the sum of the shards' counts)")
    cb = b.get("codebook")
    if cb is not None:
        if not (isinstance(cb, dict) and isinstance(cb.get("sha256"), str)
                and _is_int(cb.get("m"), 1) and cb.get("nbits") in (4, 8) and _is_int(cb.get("seed"), 0)):
            raise bad("codebook")
        _relative(cb.get("path"), where, "codebook")
    if "job" in b and not isinstance(b["job"], dict):
        raise bad("job")
