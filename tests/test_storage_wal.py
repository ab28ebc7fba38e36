"""The preallocated, salted log (format version 2): the end of the log is found by
its frames, not by the file size. Torn writes in preallocated space are dropped,
frames of another log (another salt) are never applied, damage is reported."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sutradb.errors import CorruptDatabaseError, InvalidArgumentError
from sutradb.storage import Store
from sutradb.storage.format import (FRAME, FRAME_SIZE, HEADER_SIZE, SECTOR, check_wal_header,
                                    frame, parse_frames)

from test_storage import dump


def put(txn, ids, k=0, dim=64):
    ids = list(ids)
    txn.put(ids, keys=[f"key{i}-{k}" for i in ids], texts=[f"text {i} {k}" * 3 for i in ids],
            metadata=[{"i": i, "k": k} for i in ids],
            codes=np.array([[(i + k) % 256] * 8 for i in ids], np.uint8),
            vectors=np.array([[i + k + j for j in range(dim)] for i in ids], np.float32))


def _frames(buf, salt):
    """(start, end) of every frame of a log image (from its header on)."""
    out, pos = [], HEADER_SIZE
    for end, _payload in parse_frames(buf[HEADER_SIZE:], 0, "log", salt, HEADER_SIZE):
        out.append((pos, HEADER_SIZE + end))
        pos = HEADER_SIZE + end
    return out


@pytest.fixture
def two_txns(tmp_path):
    """A store whose log holds two transactions, the second one spanning several
    sectors; the log as a crash would leave it."""
    path = tmp_path / "db"
    s = Store.open(path)
    with s.begin() as t:
        put(t, [1, 2])
    first = dump(s)
    start = s._log.pos
    lock_first = (path / "LOCK").read_bytes()   # LOCK as a crash during the second commit leaves it
    with s.begin() as t:
        put(t, range(10, 22), k=1)
        t.delete([1])
    second = dump(s)
    end = s._log.pos
    wal = path / s._man["wal"]
    salt = s._log.salt
    s._release()
    image = wal.read_bytes()
    assert len(image) > end and not any(image[end:]), "preallocated with zeros"
    assert end - start > 3 * SECTOR
    files = {n: (path / n).read_bytes() for n in os.listdir(path)}
    return {"path": path, "wal": wal, "image": image, "start": start, "end": end,
            "states": (first, second), "salt": salt, "files": files, "lock_first": lock_first}


def _write_log(db, img, crashed=False):
    """Put the directory back as the fixture left it, with log image ``img``;
    ``crashed``: with the LOCK watermark as it was before the second commit returned
    (a crash during that commit; otherwise the log lost a committed transaction)."""
    path = db["path"]
    for n in os.listdir(path):
        if n not in db["files"]:
            os.unlink(path / n)
    for n, b in db["files"].items():
        (path / n).write_bytes(b)
    db["wal"].write_bytes(bytes(img))
    if crashed:
        (path / "LOCK").write_bytes(db["lock_first"])


def _open_both(path, expect):
    with Store.open(path, "r") as r:
        assert dump(r) == expect
        r.verify()
    with Store.open(path) as w:          # the writer drops the torn tail and goes on
        assert dump(w) == expect
        w.verify()
        with w.begin() as t:
            put(t, [99], k=9)
        after = dump(w)
    with Store.open(path, "r") as r:
        assert dump(r) == after


def test_torn_write_in_preallocated_space_is_dropped(two_txns):
    """A write cut short leaves the first sectors of the last transaction and zeros
    after them (the file size does not change): the transaction is dropped, at every
    sector boundary it can be cut at."""
    db = two_txns
    first, second = db["states"]
    cuts = [c for c in range(db["start"] + 1, db["end"]) if c % SECTOR == 0]
    assert len(cuts) >= 3
    for cut in cuts + [db["start"]]:
        img = bytearray(db["image"])
        img[cut:db["end"]] = bytes(db["end"] - cut)
        _write_log(db, bytes(img), crashed=True)
        _open_both(db["path"], first)
    # the whole transaction written: nothing is lost
    _write_log(db, db["image"])
    _open_both(db["path"], second)


def test_a_committed_transaction_cut_from_the_log_is_reported(two_txns):
    """Regression (issue 19): the same torn images once the second commit had
    returned (the LOCK watermark says so) are damage, not a crash: the log lost a
    committed transaction. Cut, zeroed from a sector boundary, replaced by stale
    frames or by the log's earlier copy: CorruptDatabaseError on open (reader and
    writer) naming the log and what is missing; recover=True reads the intact part."""
    db = two_txns
    first, _ = db["states"]
    start, end, image = db["start"], db["end"], db["image"]
    sector = next(c for c in range(start + 1, end) if c % SECTOR == 0)
    zeroed = bytearray(image)
    zeroed[sector:end] = bytes(end - sector)
    stale = bytearray(image)
    stale[start:end] = _resalt(image, start, end, db["salt"] ^ 0x5EED)
    for img in (image[:start], image[:len(image) // 2] if len(image) // 2 < end else image[:end - 1],
                bytes(zeroed), bytes(stale), image[:(start + end) // 2]):
        for mode in ("r", "a"):
            _write_log(db, img)
            with pytest.raises(CorruptDatabaseError, match=r"wal-\d+\.log: the log ends at byte \d+ "
                               r"\(transaction 1\) but transactions up to 2 were committed"):
                Store.open(db["path"], mode)
        with Store.open(db["path"], "r", recover=True) as r:
            assert dump(r) == first
            assert r.recovery["intact_transaction"] == 1
            assert r.recovery["committed_transaction"] == 2
            assert "missing" in r.recovery["problems"][0]
    with pytest.raises(InvalidArgumentError):
        Store.open(db["path"], "a", recover=True)


def test_damage_inside_the_last_transaction_is_reported(two_txns):
    """Zeros that do not start at a sector boundary, or bytes after zeros, cannot be a
    write cut short: damage."""
    db = two_txns
    start, end = db["start"], db["end"]
    frames = [f for f in _frames(db["image"], db["salt"]) if f[0] >= start]
    image = db["image"]
    for a, b in frames:
        mid = next(p for p in range((a + b) // 2, b) if image[p] and p % SECTOR)
        hp = next(p for p in range(a + 1, a + FRAME_SIZE) if image[p])
        for lo, hi in ((mid, mid + 1), (hp, hp + 1)):         # zeros, data after them
            img = bytearray(db["image"])
            img[lo:hi] = bytes(hi - lo)
            _write_log(db, bytes(img))
            for mode in ("r", "a"):
                with pytest.raises(CorruptDatabaseError):
                    Store.open(db["path"], mode).close()
    # a flipped bit anywhere in the last transaction is reported (or harmless)
    for p in range(start, end, 23):
        img = bytearray(db["image"])
        img[p] ^= 1 << (p % 8)
        _write_log(db, bytes(img))
        with pytest.raises(CorruptDatabaseError):
            Store.open(db["path"], "r").close()
    # data in the preallocated zeros after the end
    img = bytearray(db["image"])
    img[end + 100] = 7
    _write_log(db, bytes(img))
    with pytest.raises(CorruptDatabaseError):
        Store.open(db["path"], "r").close()


def _resalt(image, a, b, salt):
    """The frames of ``image[a:b]`` re-framed with another salt (valid checksums)."""
    out, pos = [], a
    while pos < b:
        length = FRAME.unpack_from(image, pos)[0]
        out.append(frame(image[pos + FRAME_SIZE:pos + FRAME_SIZE + length], salt))
        pos += FRAME_SIZE + length
    return b"".join(out)


def test_frames_of_another_log_are_never_applied(two_txns):
    """Complete, checksummed frames with another salt after the end of the log (stale
    bytes of an older log, e.g. exposed by a file system after a crash) are the end
    of the log: never applied, and dropped by the next writer."""
    db = two_txns
    first, second = db["states"]
    start, end, image = db["start"], db["end"], db["image"]
    stale = _resalt(image, start, end, db["salt"] ^ 0x5EED)
    assert len(stale) == end - start
    # the second transaction replaced by its stale twin: the store stops at the first
    img = bytearray(image)
    img[start:end] = stale
    _write_log(db, bytes(img), crashed=True)
    _open_both(db["path"], first)
    # stale frames after a complete log: ignored
    _write_log(db, image)
    img = bytearray(image)
    img[end:end + len(stale)] = stale
    _write_log(db, bytes(img))
    _open_both(db["path"], second)


def test_log_of_an_older_generation_is_rejected(tmp_path):
    """Each log names its generation and has its own salt: a log file of an older
    generation put in place of the current one is reported, not replayed."""
    path = tmp_path / "db"
    s = Store.open(path)
    with s.begin() as t:
        put(t, [1])
    old_name, old = s._man["wal"], (path / s._man["wal"]).read_bytes()
    old_salt = s._log.salt
    s.checkpoint()
    with s.begin() as t:
        put(t, [2])
    new_name = s._man["wal"]
    assert new_name != old_name and s._log.salt != old_salt
    state = dump(s)
    s._release()
    good = (path / new_name).read_bytes()
    (path / new_name).write_bytes(old)
    with pytest.raises(CorruptDatabaseError):
        Store.open(path, "r")
    (path / new_name).write_bytes(good)
    with Store.open(path, "r") as r:
        assert dump(r) == state
    ver, salt = check_wal_header(good[:HEADER_SIZE], "log", r._uuid, r.generation)
    assert ver == 2 and salt == r._log.salt != 0


def test_log_grows_in_zeroed_steps_and_commits_overwrite(tmp_path):
    """With durability "full" the log is preallocated and grown (doubling) with zeros
    written in the same pwrite as a commit; the bytes after the end stay zero."""
    path = tmp_path / "db"
    s = Store.open(path, checkpoint_bytes=1 << 30)
    wal = path / s._man["wal"]
    sizes = set()
    for k in range(300):
        with s.begin() as t:
            put(t, [k], k=k, dim=128)
        sizes.add(wal.stat().st_size)
        assert s._log.size == wal.stat().st_size >= s._log.pos
    assert 1 < len(sizes) < 8
    img = wal.read_bytes()
    assert not any(img[s._log.pos:])
    state = dump(s)
    s._release()
    with Store.open(path, "r") as r:
        assert dump(r) == state
    # other durability levels append (no preallocation)
    s = Store.open(tmp_path / "n", durability="normal")
    with s.begin() as t:
        put(t, [1])
    assert os.path.getsize(tmp_path / "n" / s._man["wal"]) == s._log.pos
    s.close()


def test_reader_refresh_reads_only_what_was_appended(tmp_path):
    path = tmp_path / "db"
    w = Store.open(path)
    r = Store.open(path, "r")
    for k in range(20):
        with w.begin() as t:
            put(t, [k], k=k)
        assert r.refresh() and dump(r) == dump(w)
    assert not r.refresh()
    r.close()
    w.close()


def test_reader_refresh_follows_transactions_larger_than_its_window(tmp_path):
    path = tmp_path / "db"
    w = Store.open(path, spill_bytes=1 << 30, checkpoint_bytes=1 << 30)
    r = Store.open(path, "r")
    with w.begin() as t:
        put(t, range(2000), dim=64)            # ~600 KiB: several 64 KiB windows
    assert w._log.pos - HEADER_SIZE > 4 * (1 << 16)
    assert r.refresh() and dump(r) == dump(w)
    with w.begin() as t:
        put(t, [5000])
    assert r.refresh() and dump(r) == dump(w)
    with w.begin() as t:
        put(t, range(2000), k=1, dim=64)       # the log grows by about its size
    assert r.refresh() and dump(r) == dump(w)
    # nothing new: a refresh reads one window, not the preallocated rest of the file
    assert os.path.getsize(path / w._man["wal"]) - w._log.pos > 4 * (1 << 16)
    from sutradb.storage import manifest as manifest_mod, wal as wal_mod
    read = []
    orig = wal_mod.pread_all
    counted = lambda fd, n, off: read.append(n) or orig(fd, n, off)    # noqa: E731
    wal_mod.pread_all = manifest_mod.pread_all = counted
    try:
        assert not r.refresh()
    finally:
        wal_mod.pread_all = manifest_mod.pread_all = orig
    assert sum(read) <= (1 << 16) + 4096      # one window (and the manifest)
    r.close()
    w.close()


def test_empty_version_1_log_is_upgraded(tmp_path):
    """A store closed by the previous format (a version 1 log without records) opens;
    a writer starts a version 2 log. A version 1 log with records is reported."""
    import struct
    from sutradb.storage.format import WAL_MAGIC, crc32
    path = tmp_path / "db"
    s = Store.open(path)
    with s.begin() as t:
        put(t, [1, 2])
    s.close()
    s = Store.open(path, "r")
    name, uid, gen, state = s._man["wal"], s._uuid, s.generation, dump(s)
    s.close()
    body = struct.pack("<8sI16sQ24x", WAL_MAGIC, 1, uid, gen)
    v1 = body + struct.pack("<I", crc32(body))
    (path / name).write_bytes(v1)
    with Store.open(path, "r") as r:
        assert dump(r) == state
    with Store.open(path) as w:
        assert w.generation == gen + 1 and w._log.salt
        with w.begin() as t:
            put(t, [3])
        state = dump(w)
    with Store.open(path, "r") as r:
        assert dump(r) == state
    with Store.open(path, "r") as r:
        name, uid, gen = r._man["wal"], r._uuid, r.generation
    body = struct.pack("<8sI16sQ24x", WAL_MAGIC, 1, uid, gen)
    (path / name).write_bytes(body + struct.pack("<I", crc32(body)) + b"\x05" * 40)
    with pytest.raises(CorruptDatabaseError):
        Store.open(path, "r")


def test_reader_waits_out_a_write_in_flight_while_a_writer_is_active(tmp_path):
    """A reader that opens while the writer's pwrite is half copied sees bytes that
    look damaged; while a writer holds the lock it looks again until they settle.
    Without a writer, or if they stay the same, it is damage."""
    import threading
    import time
    path = tmp_path / "db"
    w = Store.open(path)
    with w.begin() as t:
        put(t, [1])
    start = w._log.pos
    with w.begin() as t:
        put(t, range(10, 30), k=1)
    state, end = dump(w), w._log.pos
    wal = path / w._man["wal"]
    good = wal.read_bytes()
    half = bytearray(good)
    cut = start + (end - start) // 2                  # a page read before it was copied,
    half[cut:cut + 100] = bytes(100)                  # the next one after
    assert half != bytearray(good)
    with open(wal, "r+b") as f:                       # the write "in flight"
        f.write(bytes(half))
    threading.Timer(0.02, lambda: open(wal, "r+b").write(good)).start()
    t0 = time.monotonic()
    with Store.open(path, "r") as r:                  # the writer holds the lock
        assert dump(r) == state
    assert time.monotonic() - t0 < 1.5
    with open(wal, "r+b") as f:                       # bytes that stay: damage
        f.write(bytes(half))
    with pytest.raises(CorruptDatabaseError):
        Store.open(path, "r")
    w._release()                                      # no writer: reported at once
    t0 = time.monotonic()
    with pytest.raises(CorruptDatabaseError):
        Store.open(path, "r")
    assert time.monotonic() - t0 < 0.2
