"""Generations and the manifest: the commit point of checkpoints and compactions.

``MANIFEST`` names every live file of the store: the row segments, the links and
index segments and the log ``wal-GGGGGGGG.log`` that starts at its generation ``G``
(msgpack body, checksummed header: ``docs/file-format.md``, section 3; the commit
protocols: section 5). A checkpoint or a compaction writes new files, then swaps the
manifest atomically
(:func:`write_manifest`: write a temp file, fsync, rename over ``MANIFEST``, fsync the
directory); the files the new manifest no longer names are deleted afterwards
(:func:`sweep`). Everything read back is validated (:func:`check_manifest`) before a
file it names is trusted.
"""

from __future__ import annotations

import math
import os

from ..errors import CorruptDatabaseError, InvalidArgumentError
from . import osio
from .format import (DTYPE_CODE, DTYPES, KIND_CODES, KIND_DEAD, KIND_ENDS, KIND_IDS, KIND_INDEX,
                     KIND_KEYS, KIND_LINKS, KIND_TERMS, KIND_ORDER, KIND_REC, KIND_VEC, MANIFEST_NAME,
                     MAX_CODE_SIZE, MAX_DIM, MAX_MANIFEST, VECTOR_DTYPES, align8,
                     encode_manifest, file_name, parse_file_name, wal_name)
from .segments import MappedFile, pread_all, write_new_file
from .wal import create_log
from ..text import check_spec

__all__ = ["FILE_KEYS", "read_file", "check_create_params", "fresh_body", "check_manifest",
           "write_manifest", "create_generation", "map_files", "sweep"]


def read_file(path) -> bytes:
    """The whole of a manifest file (bounded: a larger file is damage).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    CorruptDatabaseError
        The file is larger than any manifest can be.
    """
    fd = osio.open_file(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size > MAX_MANIFEST + 64:
            raise CorruptDatabaseError(f"{path}: impossible size {size}")
        return pread_all(fd, size, 0)
    finally:
        os.close(fd)


def check_create_params(p) -> dict:
    """Validate ``create_params`` of :meth:`Store.open`.

    Returns
    -------
    dict
        ``code_size``, ``dim``, ``vector_dtype`` (``{}`` for None).

    Raises
    ------
    InvalidArgumentError
        An unknown key or a value out of range.
    """
    if p is None:
        p = {}
    if not isinstance(p, dict):
        raise InvalidArgumentError("create_params must be a dict")
    unknown = set(p) - {"code_size", "dim", "vector_dtype", "text"}
    if unknown:
        raise InvalidArgumentError(f"unknown create_params: {sorted(unknown)}")
    text = check_spec(p.get("text"))
    m = p.get("code_size", 0)
    d = p.get("dim", 0)
    vd = p.get("vector_dtype", "float32" if d else None)
    if not (isinstance(m, int) and 0 <= m <= MAX_CODE_SIZE):
        raise InvalidArgumentError("code_size must be an int in [0, 65536]")
    if not (isinstance(d, int) and 0 <= d <= MAX_DIM):
        raise InvalidArgumentError("dim must be an int in [0, 2**20]")
    if vd is not None and vd not in VECTOR_DTYPES:
        raise InvalidArgumentError("vector_dtype must be 'float16' or 'float32'")
    return {"code_size": m, "dim": d, "vector_dtype": vd if d else None, "text": text}


def fresh_body(uid: bytes, gen: int, params: dict, next_file: int) -> dict:
    """The manifest body of an empty store (no files yet) at generation ``gen``."""
    vd = params.get("vector_dtype")
    body = {"format": 1, "uuid": uid, "wal": wal_name(gen), "next_file": next_file, "txn": 0,
            "m": params.get("code_size", 0), "d": params.get("dim", 0),
            "vdtype": DTYPE_CODE[VECTOR_DTYPES[vd]] if vd else 0,
            "n": 0, "sorted": True, "files": {}, "links": None, "index": None, "meta": {}}
    body.update(format=2, terms={"spec": params.get("text") or check_spec(None), "runs": []})
    return body


def write_manifest(directory: str, gen: int, body: dict, sync: bool, on_unsynced=None) -> None:
    """The commit point: write-temp, fsync, rename over MANIFEST, fsync(dir).

    Parameters
    ----------
    directory : str
    gen : int
        The new generation.
    body : dict
        The new manifest body.
    sync : bool
        fsync the temp file and the directory (durability other than ``"off"``).
    on_unsynced : callable, optional
        Called with the error when the final directory fsync fails: the new manifest is
        in place (readers see it) but may not be durable, so the caller's in-memory
        state can no longer be trusted to match the disk. The error is raised after.

    Raises
    ------
    OSError
        Writing, syncing or renaming failed.
    InvalidArgumentError
        The manifest would be larger than ``MAX_MANIFEST``.
    """
    d = directory
    tmp = os.path.join(d, MANIFEST_NAME + ".tmp")
    raw = encode_manifest(gen, body)
    if len(raw) > MAX_MANIFEST:
        raise InvalidArgumentError("manifest too large (meta or index arrays too many)")
    fd = osio.open_file(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        osio.io.pwrite(fd, raw, 0)
        if sync:
            osio.io.fsync(fd)
    finally:
        os.close(fd)
    if sync:
        osio.io.fsync_dir(d)      # new segment files and the temp are named durably
    osio.io.replace(tmp, os.path.join(d, MANIFEST_NAME))
    try:
        if sync:
            osio.io.fsync_dir(d)
    except OSError as e:
        if on_unsynced is not None:
            on_unsynced(e)
        raise


def create_generation(directory: str, gen: int, uid: bytes, params: dict, durability: str,
                      on_unsynced=None) -> None:
    """Write a fresh, empty generation ``gen`` (creation, and mode "w"): empty row
    segments, an empty log and the manifest naming them.

    Parameters
    ----------
    directory : str
    gen : int
    uid : bytes
        The new store's uuid.
    params : dict
        From :func:`check_create_params`.
    durability : {"full", "normal", "off"}
    on_unsynced : callable, optional
        As for :func:`write_manifest`.
    """
    d = directory
    sync = durability != "off"
    body = fresh_body(uid, gen, params, 1)
    files = {}
    no = 1
    m, dim, vcode = body["m"], body["d"], body["vdtype"]
    for key, kind, width, dt in (("ids", KIND_IDS, 8, 0), ("ends", KIND_ENDS, 8, 0),
                                 ("rec", KIND_REC, 0, 0), ("dead", KIND_DEAD, 8, 0),
                                 ("codes", KIND_CODES, m, 0),
                                 ("vec", KIND_VEC, dim * (DTYPES[vcode].itemsize if vcode else 0), vcode)):
        if key in ("codes", "vec") and not width:
            continue
        files[key] = write_new_file(d, file_name(no, kind), kind, uid, [], width=width,
                                    dtype=dt, sync=sync)
        no += 1
    body["files"] = files
    body["next_file"] = no
    create_log(d, gen, uid, durability == "full", sync)
    write_manifest(d, gen, body, sync, on_unsynced)


def map_files(directory: str, body: dict) -> dict:
    """Map every segment file manifest ``body`` names.

    Returns
    -------
    dict
        ``{file table key, "links", "index": MappedFile}``.

    Raises
    ------
    FileNotFoundError
        A file is missing (damage for a writer; for a reader, maybe a race with a
        writer that retired it).
    CorruptDatabaseError
        A file's header does not match, or the file is short.
    """
    d, uid = directory, body["uuid"]
    f = body["files"]
    vcode = body["vdtype"]
    specs = {"ids": (KIND_IDS, 8, 0), "ends": (KIND_ENDS, 8, 0), "rec": (KIND_REC, 0, 0),
             "dead": (KIND_DEAD, 8, 0), "order": (KIND_ORDER, 8, 0),
             "codes": (KIND_CODES, body["m"], 0), "keys": (KIND_KEYS, 16, 0),
             "vec": (KIND_VEC, body["d"] * (DTYPES[vcode].itemsize if vcode else 0), vcode)}
    maps = {}
    for key, entry in f.items():
        kind, width, dt = specs[key]
        maps[key] = MappedFile(d, entry, kind, uid, width, dt)
    if "vec" in maps:
        # full vectors are read a few rows at a time (re-ranking, get): no readahead
        # or fault-around of neighbouring pages into the reader's resident set
        osio.advise_random(maps["vec"].mm)      # a no-op where the OS has no madvise
    if body["links"] is not None:
        maps["links"] = MappedFile(d, body["links"], KIND_LINKS, uid, 0, 0)
    if body["index"] is not None:
        maps["index"] = MappedFile(d, body["index"], KIND_INDEX, uid, 0, 0)
    if body.get("terms"):
        for j, e in enumerate(body["terms"]["runs"]):
            maps[f"terms{j}"] = MappedFile(d, e, KIND_TERMS, uid, 0, 0)
    return maps


def sweep(directory: str, body: dict) -> None:
    """Remove every file of ours that manifest ``body`` does not name (and a stale
    temp manifest); errors are ignored (a later sweep retries)."""
    names = {e["name"] for e in body["files"].values()}
    for k in ("links", "index"):
        if body[k] is not None:
            names.add(body[k]["name"])
    if body.get("terms"):
        names.update(e["name"] for e in body["terms"]["runs"])
    names.add(body["wal"])
    try:
        listing = os.listdir(directory)
    except OSError:
        return
    for n in listing:
        if (parse_file_name(n) and n not in names) or n == MANIFEST_NAME + ".tmp":
            try:
                osio.io.unlink(os.path.join(directory, n))
            except OSError:
                pass


#: The keys of the manifest's file table (one row segment file each).
FILE_KEYS = {"ids", "ends", "rec", "dead", "order", "codes", "vec", "keys"}


def check_manifest(b: dict, where: str) -> None:
    """Validate the manifest body: types, ranges, and sizes consistent with counts.

    Raises
    ------
    CorruptDatabaseError
        The first inconsistency found (``where`` names the manifest).
    """
    def need(cond, what):
        if not cond:
            raise CorruptDatabaseError(f"{where}: {what}")

    def is_int(x, lo: int = 0, hi=1 << 62):
        return isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi

    keys = {"format", "uuid", "wal", "next_file", "txn", "m", "d", "vdtype", "n", "sorted",
            "files", "links", "index", "meta"}
    need(b.get("format") in (1, 2), f"unsupported format {b.get('format')!r:.20}")
    # format 2 adds the term postings (ranked full-text search); 1 has none
    if b["format"] == 2:
        keys = keys | {"terms"}
    need(set(b) == keys, f"unexpected fields {sorted(set(b) ^ keys)}")
    need(isinstance(b["uuid"], bytes) and len(b["uuid"]) == 16, "bad uuid")
    need(isinstance(b["wal"], str) and parse_file_name(b["wal"]) is not None
         and parse_file_name(b["wal"])[0] == "wal",  # type: ignore[index]  # not None: tested
         "bad log name")
    for k in ("next_file", "txn", "n"):
        need(is_int(b[k]), f"bad {k}")
    need(is_int(b["m"], 0, MAX_CODE_SIZE) and is_int(b["d"], 0, MAX_DIM), "bad widths")
    need(b["vdtype"] in (0, DTYPE_CODE[VECTOR_DTYPES["float16"]], DTYPE_CODE[VECTOR_DTYPES["float32"]]),
         "bad vector dtype")
    need((b["vdtype"] == 0) == (b["d"] == 0), "vector dtype without dimension")
    need(isinstance(b["sorted"], bool), "bad sorted flag")
    need(isinstance(b["meta"], dict), "bad meta")
    f = b["files"]
    need(isinstance(f, dict) and set(f) <= FILE_KEYS, "bad file table")

    def entry(e, ext) -> None:
        need(isinstance(e, dict) and isinstance(e.get("name"), str) and is_int(e.get("len"))
             and is_int(e.get("crc"), 0, 0xFFFFFFFF), f"bad file entry {e!r:.80}")
        p = parse_file_name(e["name"])
        need(p is not None and p[0] == "seg" and e["name"].endswith("." + ext)
             and p[1] < b["next_file"], f"bad file name {e['name']!r:.80}")

    n = b["n"]
    if f:
        need({"ids", "ends", "rec", "dead"} <= set(f), "row files missing")
    for k, e in f.items():
        entry(e, {"vec": "vec"}.get(k, k))
    if f:
        need(f["ids"]["len"] == 8 * n and f["ends"]["len"] == 8 * n, "row count does not match files")
        need(f["dead"]["len"] % 8 == 0 and f["dead"]["len"] <= 8 * n, "bad dead list size")
    else:
        need(n == 0, "rows without files")
    need(("codes" in f) == (b["m"] > 0) or not f, "code file does not match code size")
    need(("vec" in f) == (b["d"] > 0) or not f, "vector file does not match dimension")
    if "codes" in f:
        need(f["codes"]["len"] == n * b["m"], "code file size does not match")
    if "vec" in f:
        need(f["vec"]["len"] == n * b["d"] * DTYPES[b["vdtype"]].itemsize, "vector file size does not match")
    need(("order" in f) == (not b["sorted"]), "order file does not match the sorted flag")
    if "order" in f:
        need(f["order"]["len"] == 8 * n, "order file size does not match")
    if "keys" in f:
        need(f["keys"]["len"] % 16 == 0 and f["keys"]["len"] <= 16 * n, "bad key index size")
    if b["links"] is not None:
        e = b["links"]
        entry(e, "links")
        need(is_int(e.get("count")) and is_int(e.get("names_len")), "bad links entry")
        c = e["count"]
        need(e["len"] == align8(20 * c) + 16 * c + e["names_len"], "links file size does not match")
    if b["format"] == 2:
        t = b["terms"]
        need(isinstance(t, dict) and set(t) == {"spec", "runs"} and isinstance(t["runs"], list),
             "bad terms entry")
        sp = t["spec"]
        need(isinstance(sp, dict) and set(sp) == {"v", "stopwords", "stem"} and sp["v"] == 1
             and isinstance(sp["stopwords"], list) and all(isinstance(w, str) for w in sp["stopwords"])
             and (sp["stem"] is None or isinstance(sp["stem"], str)), "bad text tokenizer spec")
        r = 0
        for e in t["runs"]:
            entry(e, "terms")
            need(is_int(e.get("r0")) and is_int(e.get("n")) and e["r0"] == r,
                 "term runs do not cover consecutive rows")
            r += e["n"]
        need(r <= n, "term runs cover rows that do not exist")
    if b["index"] is not None:
        e = b["index"]
        entry(e, "index")
        blob, arrays = e.get("blob"), e.get("arrays")
        need(isinstance(blob, list) and len(blob) == 2 and is_int(blob[0]) and is_int(blob[1])
             and blob[0] + blob[1] <= e["len"], "bad index blob entry")
        need(isinstance(arrays, list), "bad index arrays")
        for a in arrays:
            need(isinstance(a, list) and len(a) == 4 and isinstance(a[0], str) and a[1] in DTYPES
                 and isinstance(a[2], list) and all(is_int(s) for s in a[2]) and is_int(a[3]),
                 "bad index array entry")
            need(a[3] % 8 == 0 and a[3] + math.prod(a[2]) * DTYPES[a[1]].itemsize <= e["len"],
                 "index array out of the file")
