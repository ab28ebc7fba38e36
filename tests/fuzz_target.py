"""The damage fuzz target: a damaged database opens to the same content or raises.

One *case* takes a seed database (a directory written through the public API), damages
one or more of its files, opens the copy through :func:`sutradb.open` (read-only or as
the writer), reads everything a user can read (ids, every concept with its key, text,
metadata and vector, every link, a few searches), runs ``verify()`` and, for a writer,
``close()`` (a checkpoint). The only allowed outcomes are

* a :class:`~sutradb.errors.SutraError` at any of those steps, or
* no error and exactly the seed's content, or
* when ``LOCK`` (its watermark) was damaged together with other files: a state the
  database had committed (the log and its watermark rolled back together to one
  transaction are what a crash there leaves; see :func:`check`).

Anything else is a *bad outcome*: another exception type, different content that
``verify()`` did not report, a hang (``faulthandler`` ends the process after
``HANG_SECONDS``) or a crash of the process (the drivers run cases in a child process).

Seeds (:func:`build_seeds`) cover every file kind: segments with unsorted ids (an
``.order``), dead rows, keys, links, a trained PQ + IVF index, and a log that holds
committed transactions (copied while the writer is open, as a crash would leave it),
in the three durability levels' layouts (``full`` preallocates the log).

Drivers
-------
* :func:`random_case` + :func:`run_random`: a seeded mutator (bit flips, byte writes,
  truncation, zeroed 4 KiB pages, splices of two valid files, a file replaced by the
  same file of an earlier state of the same database, several files at once).
* :func:`atheris_one_input`: the coverage-guided target for `atheris` (libFuzzer):
  the input is one selector byte (file and open mode) and the new content of that
  file; the seed corpus is every file of every seed (``bench/fuzz.py``).

Run as a script (what tests/test_fuzz.py and bench/fuzz.py call)::

    python fuzz_target.py seeds DIR                       # build the seeds in DIR
    python fuzz_target.py random DIR CASES SEED           # N random cases; prints a summary
    python fuzz_target.py atheris DIR RUNS ARTIFACTS [libFuzzer flags]   # coverage-guided
    python fuzz_target.py replay DIR CASEFILE             # one saved atheris input
"""

from __future__ import annotations

import faulthandler
import json
import os
import random
import shutil
import sys
import tempfile

import numpy as np

HANG_SECONDS = 60.0
DIM = 16
#: the seeds: name -> durability of the database
SEEDS = {"full": "full", "normal": "normal", "off": "off"}
STATE_FILE = "state.json"  # per seed: the expected content digest and the file list


# --------------------------------------------------------------------------- seeds
def _queries():
    return np.random.default_rng(7).standard_normal((3, DIM)).astype("float32")


def _write_history(path, durability, snapshots):
    """Write the seed database at ``path``; copy the directory into ``snapshots`` at
    three moments (after the first checkpoint, in the middle of the log, at the end).
    Returns the content after every committed transaction of the log (the states a
    crash could leave)."""
    import sutradb

    rng = np.random.default_rng(11)
    n = 480
    X = rng.standard_normal((n, DIM)).astype("float32")
    with sutradb.open(path, "x", dim=DIM, durability=durability, index_threshold=300,
                      train_iters=4, seed=3) as db:
        order = rng.permutation(n)                      # ids out of order: an .order file
        ids = np.arange(n, dtype="int64")[order] * 3 + 5
        with db.transaction():
            got = db.add_vectors(X[order], texts=[f"concept {i} alpha" for i in ids.tolist()],
                                 metadata=[{"i": int(i), "tags": ["a", "b"][: int(i) % 3],
                                            "src": {"site": "s%d" % (int(i) % 4)}}
                                           for i in ids.tolist()],
                                 keys=[f"k{int(i)}" if int(i) % 5 else None for i in ids.tolist()])
        got = [int(x) for x in got]
        for a, b in zip(got[:40], got[1:41]):
            db.link(a, b, "next", weight=0.5)
        db.link(got[0], got[7], "is_a")
        db.delete(got[100:130])
        db.build_index(kind="ivf", nlist=8)
    shutil.copytree(path, os.path.join(snapshots, "s1"))
    db = sutradb.open(path, "a", durability=durability)
    history = [content(db)]
    try:
        for t in range(12):                              # small transactions: the log
            with db.transaction():
                v = rng.standard_normal((3, DIM)).astype("float32")
                new = [int(x) for x in db.add_vectors(v, texts=[f"late {t} {j}" for j in range(3)],
                                                      metadata=[{"t": t}] * 3)]
                db.link(new[0], got[t], "late")
                if t % 3 == 0:
                    db.delete([got[200 + t]])
                if t % 4 == 1:
                    db.update(got[300 + t], metadata={"updated": t}, text="updated text")
            history.append(content(db))
            if t == 5:
                shutil.copytree(path, os.path.join(snapshots, "s2"))
        shutil.copytree(path, os.path.join(snapshots, "s3"))   # the seed: the writer is open
    finally:
        db.close()
    return history


def content(db) -> str:
    """Everything a user can read from ``db``, as one comparable string."""
    ids = db.ids()
    concepts = db.get_many(ids)
    out = {
        "ids": ids.tolist(),
        "concepts": [[c.id, c.key, c.text, c.metadata] for c in concepts],
        "vectors": db.get_vectors(ids).astype("float32").round(3).tolist() if len(ids) else [],
        "links": sorted([list(x) for x in db.links()]),
    }
    D, I = db.search_vectors(_queries(), k=5)
    out["search"] = I.tolist()
    out["dist"] = np.round(D, 3).tolist()
    out["index"] = {k: v for k, v in db.index_info.items() if isinstance(v, (str, int))}
    return json.dumps(out, sort_keys=True, default=str)


def build_seeds(root):
    """Build every seed under ``root``; each seed directory has ``db/`` (the database as
    a crash would leave it: log records, preallocated space), ``s1``/``s2`` (earlier
    states of it) and ``state.json``."""
    import sutradb

    os.makedirs(root, exist_ok=True)
    for name, durability in SEEDS.items():
        d = os.path.join(root, name)
        if os.path.exists(os.path.join(d, STATE_FILE)):
            continue
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        work = os.path.join(d, "work")
        history = _write_history(work, durability, d)
        shutil.rmtree(work)
        os.rename(os.path.join(d, "s3"), os.path.join(d, "db"))
        with sutradb.open(os.path.join(d, "db"), "r") as db:
            expected = content(db)
        files = sorted(os.listdir(os.path.join(d, "db")))
        with open(os.path.join(d, STATE_FILE), "w") as f:
            json.dump({"expected": expected, "files": files, "history": history}, f)


class Seed:
    def __init__(self, root, name):
        self.dir = os.path.join(root, name)
        with open(os.path.join(self.dir, STATE_FILE)) as f:
            st = json.load(f)
        self.name = name
        self.expected = st["expected"]
        self.history = set(st["history"])
        self.files = st["files"]
        self.db = os.path.join(self.dir, "db")

    def read(self, name, state="db"):
        p = os.path.join(self.dir, state, name)
        if not os.path.exists(p):
            return None
        with open(p, "rb") as f:
            return f.read()


def load_seeds(root):
    return [Seed(root, n) for n in SEEDS]


# --------------------------------------------------------------------------- one case
class BadOutcome(AssertionError):
    pass


def check(db_dir, mode, expected, earlier=frozenset()) -> str:
    """Open ``db_dir`` and read it; return ``"error:<Type>"``, ``"same"`` or
    ``"earlier"`` (a state in ``earlier``); raise :class:`BadOutcome` for anything
    else.

    ``earlier`` is given only when the case damaged ``LOCK`` as well as other files:
    the log and its watermark rolled back together to one transaction are exactly
    what a crash at that transaction leaves, which no reader can tell apart; such a
    case may show that committed state (never one that was not committed)."""
    import sutradb
    from sutradb.errors import SutraError

    db = None
    try:
        db = sutradb.open(db_dir, mode)
        got = content(db)
        db.verify()
        if got != expected:
            if got in earlier:
                return "earlier"
            raise BadOutcome(f"verify() passed but the content differs (mode {mode!r})")
        if mode == "a":
            db.close()                                    # a checkpoint of what was read
            db = sutradb.open(db_dir, "r")
            if content(db) != expected:
                raise BadOutcome("the content changed across the writer's close")
        return "same"
    except SutraError as e:
        return f"error:{type(e).__name__}"
    except BadOutcome:
        raise
    except Exception as e:  # noqa: BLE001 - the point: nothing else may escape
        raise BadOutcome(f"{type(e).__name__} is not a SutraError: {e}") from e
    finally:
        if db is not None:
            try:
                db.close()
            except Exception:  # noqa: BLE001 - closing after an error may fail again
                pass


def apply_case(seed, changes, work):
    """Copy ``seed``'s database to ``work`` and apply ``changes`` (name -> bytes or
    None to delete)."""
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(seed.db, work)
    for name, data in changes.items():
        p = os.path.join(work, name)
        if data is None:
            if os.path.exists(p):
                os.remove(p)
        else:
            with open(p, "wb") as f:
                f.write(data)


# --------------------------------------------------------------------------- random mutator
def _mutate(rng, data, other):
    """One mutation of ``data`` (bytes); ``other`` is another valid file for splices."""
    b = bytearray(data)
    op = rng.choice(["flip", "byte", "truncate", "zero_page", "splice", "cut_half", "zero_tail",
                     "insert", "flip_header"])
    n = len(b)
    if n == 0:
        return bytes(rng.randbytes(rng.randint(1, 64))), "random"
    if op == "flip":
        for _ in range(rng.choice([1, 1, 2, 8])):
            i = rng.randrange(n)
            b[i] ^= 1 << rng.randrange(8)
    elif op == "flip_header":
        i = rng.randrange(min(n, 96))
        b[i] ^= 1 << rng.randrange(8)
    elif op == "byte":
        b[rng.randrange(n)] = rng.choice([0, 0xFF, rng.randrange(256)])
    elif op == "truncate":
        b = b[: rng.randrange(n)]
    elif op == "cut_half":
        b = b[: n // 2]
    elif op == "zero_page":
        i = rng.randrange(0, max(1, n), 512)
        b[i:i + 4096] = bytes(len(b[i:i + 4096]))
    elif op == "zero_tail":
        i = rng.randrange(0, max(1, n), 512)
        b[i:] = bytes(n - i)
    elif op == "insert":
        i = rng.randrange(n)
        b[i:i] = rng.randbytes(rng.randint(1, 16))
    elif op == "splice":
        o = other if other else data
        i, j = rng.randrange(n), rng.randrange(len(o))
        b = b[:i] + bytearray(o[j:])
    return bytes(b), op


def random_case(rng, seeds):
    """A random case: ``(seed, mode, changes, description)``."""
    seed = rng.choice(seeds)
    files = [f for f in seed.files if f != "LOCK"] + ["LOCK"]
    k = rng.choice([1, 1, 1, 2, 3])
    changes, what = {}, []
    for name in rng.sample(files, min(k, len(files))):
        data = seed.read(name) or b""
        r = rng.random()
        if r < 0.08:                                      # an earlier state of this file
            old = seed.read(name, rng.choice(["s1", "s2"]))
            if old is not None and old != data:
                changes[name] = old
                what.append(f"{name}:earlier")
                continue
        if r < 0.11:
            changes[name] = None
            what.append(f"{name}:deleted")
            continue
        same_kind = [f for f in files if f != name and f.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]]
        other_name = rng.choice(same_kind) if same_kind else name
        other = seed.read(other_name, rng.choice(["db", "s1", "s2"])) or b""
        changes[name], op = _mutate(rng, data, other)
        what.append(f"{name}:{op}")
    mode = rng.choice(["r", "a"])
    return seed, mode, changes, f"{seed.name} {mode} " + " ".join(what)


def run_random(root, cases, seed, work=None, log=None):
    """Run ``cases`` random cases; return a summary dict. Stops at the first bad
    outcome (raising :class:`BadOutcome` with the case's description)."""
    seeds = load_seeds(root)
    rng = random.Random(seed)
    work_root = work or tempfile.mkdtemp(prefix="sutra-fuzz-",
                                         dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    outcomes = {}
    try:
        for i in range(cases):
            s, mode, changes, what = random_case(rng, seeds)
            w = os.path.join(work_root, "case")
            apply_case(s, changes, w)
            faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
            both = "LOCK" in changes and len(changes) > 1
            try:
                out = check(w, mode, s.expected, s.history if both else frozenset())
            except BadOutcome as e:
                raise BadOutcome(f"case {i} (seed {seed}): {what}: {e}") from e
            finally:
                faulthandler.cancel_dump_traceback_later()
            outcomes[out] = outcomes.get(out, 0) + 1
            if log is not None and (i + 1) % 1000 == 0:
                print(f"{i + 1} cases {outcomes}", file=log, flush=True)
    finally:
        if work is None:
            shutil.rmtree(work_root, ignore_errors=True)
    return {"cases": cases, "outcomes": outcomes}


# --------------------------------------------------------------------------- atheris
class AtherisTarget:
    """``atheris.Setup(sys.argv, AtherisTarget(root))``: byte 0 of the input picks the
    seed, the file and the mode; the rest is that file's new content."""

    def __init__(self, root, work=None):
        self.seeds = load_seeds(root)
        self.slots = [(s, f) for s in self.seeds for f in s.files]
        self.work = work or tempfile.mkdtemp(prefix="sutra-atheris-",
                                             dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.outcomes = {}

    def corpus(self):
        """The seed inputs: every file of every seed, once per mode."""
        for i, (s, f) in enumerate(self.slots):
            for mode_bit in (0, 1):
                yield bytes([(i << 1 | mode_bit) % 256]) + (s.read(f) or b"")

    def decode(self, data: bytes):
        if not data:
            return None
        sel = data[0]
        s, f = self.slots[(sel >> 1) % len(self.slots)]
        return s, f, ("a" if sel & 1 else "r"), data[1:]

    def __call__(self, data: bytes):
        d = self.decode(data)
        if d is None:
            return
        s, f, mode, body = d
        w = os.path.join(self.work, "case")
        apply_case(s, {f: body}, w)
        out = check(w, mode, s.expected)
        self.outcomes[out] = self.outcomes.get(out, 0) + 1


def run_atheris(root, runs, artifacts, extra=()):
    """The coverage-guided campaign: libFuzzer (through atheris) mutates the seed
    corpus (every file of every seed) with the storage and index layers instrumented;
    a bad outcome raises in the target, which atheris reports as a crash and saves as
    ``crash-*`` under ``artifacts``. Never returns (libFuzzer exits)."""
    import atheris

    if "sutradb" in sys.modules:
        raise RuntimeError("sutradb must be imported under atheris's instrumentation")
    with atheris.instrument_imports(include=["sutradb"]):
        import sutradb  # noqa: F401
        import sutradb.database, sutradb.storage, sutradb.index.vector  # noqa: E401,F401
    build_seeds(root)
    target = AtherisTarget(root)
    corpus = os.path.join(artifacts, "corpus")
    os.makedirs(corpus, exist_ok=True)
    if not os.listdir(corpus):
        for i, data in enumerate(target.corpus()):
            with open(os.path.join(corpus, f"seed-{i:04d}"), "wb") as f:
                f.write(data)
    longest = max(os.path.getsize(os.path.join(corpus, f)) for f in os.listdir(corpus))
    args = [sys.argv[0], f"-runs={runs}", f"-max_len={longest + 4096}",
            f"-timeout={int(HANG_SECONDS)}", "-rss_limit_mb=4096", "-print_final_stats=1", "-len_control=0",
            f"-artifact_prefix={artifacts.rstrip('/')}/", *extra, corpus]
    atheris.Setup(args, target)
    atheris.Fuzz()


def main(argv):
    cmd = argv[1]
    if cmd == "seeds":
        build_seeds(argv[2])
        print("seeds ok")
    elif cmd == "random":
        root, cases, seed = argv[2], int(argv[3]), int(argv[4])
        build_seeds(root)
        summary = run_random(root, cases, seed, log=sys.stderr)
        print(json.dumps(summary))
    elif cmd == "atheris":
        run_atheris(argv[2], int(argv[3]), argv[4], argv[5:])
    elif cmd == "replay":
        t = AtherisTarget(argv[2])
        with open(argv[3], "rb") as f:
            t(f.read())
        print(json.dumps(t.outcomes))
    else:
        raise SystemExit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main(sys.argv)
