"""The ``sutradb`` command line (also ``python -m sutradb``).

Every subcommand opens a database directory, does one thing and exits; errors print
one line to stderr and exit non-zero (1 for a sutradb error, 2 for bad usage).
``--json`` prints machine-readable output for scripts.

Examples
--------
::

    sutradb init notes.sutra --embedder sentence-transformers:all-MiniLM-L6-v2
    sutradb add notes.sutra texts.txt                 # one concept per line
    sutradb add notes.sutra docs.jsonl --text-field body --key-field id
    sutradb import notes.sutra vectors.npy --metadata meta.jsonl
    sutradb export notes.sutra --out backup/          # everything, Parquet
    sutradb import copy.sutra backup/                 # an equal database
    sutradb search notes.sutra "capital of France" -k 5 --where '{"src": "wiki"}'
    sutradb get notes.sutra 42
    sutradb link notes.sutra 1 2 is_a --weight 0.5
    sutradb neighbors notes.sutra 1
    sutradb info notes.sutra --json
    sutradb verify notes.sutra
    sutradb bench --quick --json out.json
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .errors import SutraError

__all__ = ["main", "build_parser"]


class UsageError(Exception):
    """Bad command-line input (exit code 2)."""


# ---------------------------------------------------------------------------- helpers

def _open(args, mode="a", **extra):
    from .database import open as sopen
    opts = {}
    if getattr(args, "embedder", None):
        opts["embedder"] = args.embedder
    opts.update(extra)
    return sopen(args.path, mode, timeout=getattr(args, "timeout", 0.0), **opts)


def _print(args, obj, human=None):
    """Print ``obj`` as JSON with --json, else ``human`` (a string or list of lines)."""
    if args.json:
        print(json.dumps(obj, ensure_ascii=False, default=_json_default))
    else:
        if human is None:
            human = json.dumps(obj, ensure_ascii=False, indent=2, default=_json_default)
        print(human if isinstance(human, str) else "\n".join(human))


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (bytes, bytearray)):
        return o.hex()
    return str(o)


def _concept_dict(c, with_vector=False):
    d = {"id": int(c.id), "key": c.key, "text": c.text, "metadata": c.metadata}
    if with_vector and c.vector is not None:
        d["vector"] = np.asarray(c.vector, dtype=np.float32).tolist()
    return d


def _id_or_key(s: str):
    try:
        return int(s)
    except ValueError:
        return s


def _progress(enabled: bool, total: int | None, what: str):
    """A rich progress bar (count, %, throughput, ETA) on a terminal, else nothing."""
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)
    except ImportError:
        return None
    p = Progress(TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(),
                 TextColumn("{task.percentage:>3.0f}%"),
                 TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                 transient=True)
    return p


def _read_items(path: str, fmt: str | None, text_field: str, key_field: str | None):
    """(texts, keys, metadata) from a text file (one per line), JSONL or CSV."""
    if path == "-":
        data, name = sys.stdin.read(), "<stdin>"
    else:
        data, name = Path(path).read_text(encoding="utf-8"), path
    if fmt is None:
        fmt = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}.get(
            Path(name).suffix.lower(), "text")
    texts, keys, metas = [], [], []
    if fmt == "text":
        texts = [line for line in data.splitlines() if line.strip()]
        return texts, None, None
    if fmt == "jsonl":
        rows = []
        for n, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UsageError(f"{name}:{n}: not JSON ({e.msg})") from None
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(data)))
    else:
        raise UsageError(f"unknown format {fmt!r}: text, jsonl or csv")
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or text_field not in row:
            raise UsageError(f"{name}: record {n} has no {text_field!r} field")
        texts.append(str(row[text_field]))
        keys.append(None if key_field is None else
                    (None if row.get(key_field) is None else str(row[key_field])))
        metas.append({k: v for k, v in row.items() if k not in (text_field, key_field)} or None)
    return texts, (keys if key_field else None), metas


# ------------------------------------------------------------------------ commands

def cmd_init(args):
    opts = {}
    if args.vector_dtype:
        opts["vector_dtype"] = None if args.vector_dtype == "none" else args.vector_dtype
    if args.index:
        opts["index"] = args.index
    with _open(args, "x" if not args.force else "w", dim=args.dim, metric=args.metric,
               **opts) as db:
        info = _info(db)
    _print(args, info, f"created {args.path} ({info.get('metric')}, dim {info.get('dim') or 'set by the first vectors'})")


def cmd_add(args):
    texts, keys, metas = _read_items(args.file, args.format, args.text_field, args.key_field)
    if not texts:
        raise UsageError("nothing to add")
    with _open(args) as db:
        bar = _progress(not args.quiet and not args.json, len(texts), "learning")
        ids = []
        step = max(1, args.batch_size)
        if bar is None:
            for s in range(0, len(texts), step):
                ids.extend(db.add(texts[s:s + step],
                                  metadata=None if metas is None else metas[s:s + step],
                                  keys=None if keys is None else keys[s:s + step]).tolist())
        else:
            import time
            t0 = time.perf_counter()
            with bar:
                task = bar.add_task("add", total=len(texts), rate="")
                for s in range(0, len(texts), step):
                    ids.extend(db.add(texts[s:s + step],
                                      metadata=None if metas is None else metas[s:s + step],
                                      keys=None if keys is None else keys[s:s + step]).tolist())
                    done = min(len(texts), s + step)
                    bar.update(task, completed=done,
                               rate=f"{done / max(time.perf_counter() - t0, 1e-9):,.0f} concepts/s")
    _print(args, {"added": len(ids), "ids": ids},
           f"added {len(ids)} concepts (ids {ids[0]}..{ids[-1]})")


def cmd_import(args):
    """An export (a directory, a JSONL file, or ``-`` for stdin) into a new database;
    else a .npy array of vectors (with --texts / --metadata) into the database."""
    from .database.exchange import from_export, is_export
    src = args.source
    if src == "-" or is_export(src):
        if args.texts or args.metadata:
            raise UsageError("--texts and --metadata are for a .npy of vectors; an export "
                             "holds its own")
        stream = sys.stdin if src == "-" else src
        kw = {"durability": args.durability, "timeout": args.timeout}
        if getattr(args, "embedder", None):
            kw["embedder"] = args.embedder
        with from_export(stream, args.path, **kw) as db:
            out = {"imported": len(db), "links": len(db.links()),
                   "index": db.index_info["kind"], "embedder": db.embedder_name}
        _print(args, out, f"imported {out['imported']} concepts and {out['links']} links into "
                          f"{args.path} (index: {out['index']})")
        return
    if os.path.isdir(src):
        raise UsageError(f"{src}: a directory without a manifest.json (not a sutradb export)")
    try:
        V = np.load(src, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise UsageError(f"{src}: neither a sutradb export nor a .npy array ({e})") from None
    texts = metas = keys = None
    if args.texts:
        texts = Path(args.texts).read_text(encoding="utf-8").splitlines()
    if args.metadata:
        metas = [json.loads(l) if l.strip() else None
                 for l in Path(args.metadata).read_text(encoding="utf-8").splitlines()]
    with _open(args, durability=args.durability) as db:
        ids = db.add_vectors(V, texts=texts, metadata=metas, keys=keys)
    _print(args, {"added": int(len(ids)), "first_id": int(ids[0]) if len(ids) else None},
           f"imported {len(ids)} vectors")


def _parse_where(s):
    if s is None:
        return None
    try:
        return json.loads(s)
    except json.JSONDecodeError as e:
        raise UsageError(f"--where is not JSON: {e.msg}") from None


def cmd_search(args):
    where = _parse_where(args.where)
    with _open(args, "r") as db:
        if args.vector is not None:
            q = np.array([float(x) for x in args.vector.split(",")], dtype=np.float32)
        elif args.query is None:
            raise UsageError("give a query text or --vector")
        else:
            q = args.query
        hits = db.search(q, k=args.k, where=where, nprobe=args.nprobe, rerank=args.rerank)
        rows = [{"id": int(h.id), "distance": float(h.distance), "key": h.concept.key,
                 "text": h.concept.text, "metadata": h.concept.metadata} for h in hits]
    _print(args, rows, [f"{i + 1:>3}. [{r['distance']:.4f}] #{r['id']} {r['text'] or ''}"
                        for i, r in enumerate(rows)] or "no hits")


def cmd_index(args):
    params = {}
    for name in ("kind", "nlist", "m", "nbits", "seed"):
        v = getattr(args, name)
        if v is not None:
            params[name] = v
    with _open(args, progress=not args.quiet) as db:
        info = db.build_index(**params)
    _print(args, info, [f"{k}: {v}" for k, v in info.items()])


def cmd_tune(args):
    """Queries: a text file (one per line, embedded) or a .npy array of vectors."""
    if args.queries.endswith(".npy"):
        try:
            Q = np.load(args.queries, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UsageError(f"{args.queries}: not a .npy array ({e})") from None
    else:
        Q = [l for l in Path(args.queries).read_text(encoding="utf-8").splitlines() if l.strip()]
        if not Q:
            raise UsageError(f"{args.queries}: no queries")
    with _open(args, "a" if args.save else "r") as db:
        r = db.tune(Q, k=args.k, target_recall=args.target_recall, save=args.save,
                    where=_parse_where(args.where))
    lines = [f"nprobe={r['nprobe']} rerank={r['rerank']} recall@{args.k}={r['recall']:.4f} "
             f"{r['qps']:.0f} queries/s (one per call)" if r["qps"] else
             f"target not reached: best recall@{args.k}={r['recall']:.4f} at nprobe="
             f"{r['nprobe']} rerank={r['rerank']}"]
    if args.save:
        lines.append("saved as the database's default nprobe")
    _print(args, r, lines)


def cmd_get(args):
    with _open(args, "r") as db:
        c = db.get(_id_or_key(args.id))
        d = _concept_dict(c, with_vector=args.vector)
    _print(args, d)


def cmd_delete(args):
    with _open(args) as db:
        ids = [db.get(_id_or_key(x)).id for x in args.ids]
        db.delete(ids)
    _print(args, {"deleted": [int(i) for i in ids]}, f"deleted {len(ids)}")


def cmd_link(args):
    with _open(args) as db:
        db.link(_id_or_key(args.a), _id_or_key(args.b), args.relation, weight=args.weight)
    _print(args, {"linked": [args.a, args.b, args.relation, args.weight]},
           f"{args.a} -[{args.relation} {args.weight}]-> {args.b}")


def cmd_neighbors(args):
    with _open(args, "r") as db:
        links = db.neighbors(_id_or_key(args.id), relation=args.relation,
                             direction=args.direction)
        rows = [{"id": int(l.id), "relation": l.relation, "weight": float(l.weight)}
                for l in links]
    _print(args, rows, [f"{r['relation']} -> #{r['id']} ({r['weight']})" for r in rows]
           or "no links")


def _dir_size(path) -> int:
    total = 0
    if path and os.path.isdir(path):
        for root, _, files in os.walk(path):
            for f in files:
                try:
                    total += os.path.getsize(os.path.join(root, f))
                except OSError:
                    pass
    return total


def _info(db) -> dict:
    info = {"path": str(db.path), "concepts": len(db), "dim": db.dim, "metric": db.metric,
            "disk_bytes": _dir_size(db.path)}
    try:
        info["index"] = db.index_info
    except (AttributeError, SutraError):
        pass
    info["embedder"] = db.embedder_name
    return info


def cmd_info(args):
    if args.build:
        from . import simd
        if args.json:
            _print(args, simd.config())
        else:
            simd.show_config()
        if args.path is None:
            return
    if args.path is None:
        raise UsageError("info needs a database path (or --build)")
    with _open(args, "r") as db:
        info = _info(db)
    lines = [f"{k}: {v}" for k, v in info.items() if k != "index"]
    for k, v in (info.get("index") or {}).items():
        lines.append(f"index.{k}: {v}")
    _print(args, info, lines)


def cmd_verify(args):
    with _open(args, "r") as db:
        report = db.verify()
    _print(args, {"ok": True, "report": report}, f"ok: {report}")


def cmd_recover(args):
    from .database import open as sopen
    with sopen(args.path, "r", recover=True, timeout=getattr(args, "timeout", 0.0)) as db:
        rec = db.recovery
        n = len(db)
        out = {"concepts": n, "lost": rec is not None, "recovery": rec}
        lines = [f"intact: {n} concepts"]
        if rec is None:
            lines.append("nothing is missing")
        else:
            lines.append(f"read up to transaction {rec['intact_transaction']}"
                         + (f" of {rec['committed_transaction']} committed"
                            if rec.get("committed_transaction") is not None else ""))
            lines += [f"lost: {p}" for p in rec["problems"]]
        if args.to:
            copied = _copy_intact(db, args.to)
            out["copied_to"], out["copied"] = args.to, copied
            lines.append(f"copied {copied['concepts']} concepts and {copied['links']} links to "
                         f"{args.to} (new ids; keys, texts, metadata and vectors kept)")
    _print(args, out, lines)
    return 1 if rec is not None and not args.to else 0


def _copy_intact(db, dest):
    """Write every concept and link of ``db`` into a new database at ``dest``."""
    from .database import open as sopen
    ids = db.ids()
    if len(ids) and db.get(int(ids[0])).vector is None:
        raise UsageError("this database keeps no full vectors: nothing to copy them from")
    new_of = {}
    with sopen(dest, "x", dim=db.dim, metric=db.metric,
               text_tokenizer=db._store.text_spec) as out:
        with out.transaction():
            for s in range(0, len(ids), 4096):
                part = ids[s:s + 4096]
                cs = db.get_many(part)
                got = out.add_vectors(db.get_vectors(part).astype("float32"),
                                      texts=[c.text for c in cs], metadata=[c.metadata for c in cs],
                                      keys=[c.key for c in cs])
                new_of.update(zip(part.tolist(), got.tolist()))
            links = 0
            for a, b, rel, w in db.links():
                if a in new_of and b in new_of:
                    out.link(new_of[a], new_of[b], rel, weight=w)
                    links += 1
    return {"concepts": len(new_of), "links": links}


def cmd_compact(args):
    with _open(args) as db:
        db.compact()
        n = len(db)
    _print(args, {"compacted": True, "concepts": n}, f"compacted ({n} concepts)")


def cmd_export(args):
    """Everything (concepts with ids and vectors, links, embedder spec, options, index):
    a directory (Parquet or JSONL tables), a .jsonl file, or JSONL on stdout."""
    out = args.out
    if out is None:
        if args.format == "parquet":
            raise UsageError("a Parquet export is a directory: give --out DIR")
        dest = sys.stdout
    else:
        dest = out
        if os.path.exists(out) and not (os.path.isdir(out) and not os.listdir(out)):
            raise UsageError(f"{out} exists (an export is written to a new path)")
    with _open(args, "r") as db:
        man = db.export(dest, format=args.format)
    if out:
        print(f"exported {man['concepts']} concepts and {man['links']} links to {out}",
              file=sys.stderr)


def cmd_bench(args, rest):
    """Runs the performance suite that ships in the package (:mod:`sutradb.bench`)."""
    from .bench.suite import main as suite_main
    return suite_main(rest, prog="sutradb bench")


# -------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sutradb", description="An embedded concept database.")
    p.add_argument("--version", action="version", version=f"sutradb {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def cmd(name, func, help_, path=True):
        sp = sub.add_parser(name, help=help_, description=help_)
        if path:
            sp.add_argument("path", help="the database directory")
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        sp.add_argument("--timeout", type=float, default=0.0,
                        help="seconds to wait for another writer's lock")
        sp.set_defaults(func=func)
        return sp

    sp = cmd("init", cmd_init, "create a database")
    sp.add_argument("--dim", type=int, help="vector dimension (default: the embedder's)")
    sp.add_argument("--metric", default="cosine", choices=("cosine", "ip", "l2"))
    sp.add_argument("--embedder", help="e.g. sentence-transformers:all-MiniLM-L6-v2 or spacy:NAME")
    sp.add_argument("--vector-dtype", choices=("float16", "float32", "none"),
                    help="full vectors kept for exact re-ranking (default float16)")
    sp.add_argument("--force", action="store_true", help="replace an existing database")
    sp.add_argument("--index", choices=("auto", "flat", "pq", "ivf"),
                    help="exact -> PQ -> IVF-PQ as it grows (auto, the default), or one kind")

    sp = cmd("add", cmd_add, "learn concepts from texts (one per line, JSONL or CSV)")
    sp.add_argument("file", help="text/JSONL/CSV file, or - for stdin")
    sp.add_argument("--format", choices=("text", "jsonl", "csv"), help="default: by extension")
    sp.add_argument("--text-field", default="text", help="JSONL/CSV field holding the text")
    sp.add_argument("--key-field", help="JSONL/CSV field holding a unique key")
    sp.add_argument("--embedder", help="embedder spec (default: the database's)")
    sp.add_argument("--batch-size", type=int, default=1024, help="texts per transaction")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")

    sp = cmd("import", cmd_import, "import an export (into a new database) or vectors "
             "from a .npy file")
    sp.add_argument("source", help="an export of `sutradb export` (a directory, a .jsonl file, "
                    "or - for stdin), or an (n, dim) .npy array")
    sp.add_argument("--texts", help="text file, one line per vector (.npy)")
    sp.add_argument("--metadata", help="JSONL file, one object per vector (.npy)")
    sp.add_argument("--embedder", help="embedder spec to load the export's embedder from")
    sp.add_argument("--durability", default="normal", choices=("full", "normal", "off"))

    sp = cmd("search", cmd_search, "similarity search by text or vector")
    sp.add_argument("query", nargs="?", help="query text (needs an embedder)")
    sp.add_argument("--vector", help="comma-separated query vector instead of a text")
    sp.add_argument("-k", type=int, default=10)
    sp.add_argument("--where", help='metadata filter as JSON, e.g. \'{"src": "wiki"}\'')
    sp.add_argument("--embedder", help="embedder spec (default: the database's)")
    sp.add_argument("--nprobe", type=int, help="IVF lists scanned (default: the tuned one)")
    sp.add_argument("--rerank", type=int, help="candidates re-ranked exactly (0: none)")

    sp = cmd("index", cmd_index, "(re)build the vector index: PQ or IVF-PQ")
    sp.add_argument("--kind", choices=("pq", "ivf"), help="default: what the size calls for")
    sp.add_argument("--nlist", type=int, help="IVF lists (default ~4 sqrt(n))")
    sp.add_argument("--m", type=int, help="PQ subspaces (retrains the quantizer)")
    sp.add_argument("--nbits", type=int, choices=(4, 8), help="PQ bits (retrains the quantizer)")
    sp.add_argument("--seed", type=int, help="training seed (retrains the quantizer)")
    sp.add_argument("--quiet", action="store_true", help="no progress")

    sp = cmd("tune", cmd_tune, "choose nprobe / rerank for a target recall on your queries")
    sp.add_argument("queries", help="text file (one query per line) or .npy query vectors")
    sp.add_argument("--target-recall", type=float, default=None,
                    help="default: the database's target_recall (0.95)")
    sp.add_argument("-k", type=int, default=10)
    sp.add_argument("--where", help="metadata filter as JSON")
    sp.add_argument("--save", action="store_true", help="store the chosen nprobe as the default")
    sp.add_argument("--embedder", help="embedder spec (default: the database's)")

    sp = cmd("get", cmd_get, "show one concept by id or key")
    sp.add_argument("id", help="id or key")
    sp.add_argument("--vector", action="store_true", help="include the vector")

    sp = cmd("delete", cmd_delete, "delete concepts by id or key")
    sp.add_argument("ids", nargs="+")

    sp = cmd("link", cmd_link, "link two concepts")
    sp.add_argument("a")
    sp.add_argument("b")
    sp.add_argument("relation")
    sp.add_argument("--weight", type=float, default=1.0)

    sp = cmd("neighbors", cmd_neighbors, "links of a concept")
    sp.add_argument("id")
    sp.add_argument("--relation")
    sp.add_argument("--direction", default="out", choices=("out", "in", "both"))

    sp = cmd("info", cmd_info, "counts, sizes, index parameters, embedder; --build: how "
             "sutradb was built and which SIMD kernels run here", path=False)
    sp.add_argument("path", nargs="?", help="the database directory")
    sp.add_argument("--build", action="store_true",
                    help="the compiled SIMD levels, the active one, compiler, flags, OpenMP")
    cmd("verify", cmd_verify, "check every file and checksum")
    cmd("compact", cmd_compact, "rewrite live data, reclaim space")
    sp = cmd("recover", cmd_recover, "open a damaged database as far as it is intact (read-only) "
             "and say what was lost; exit 1 if anything was")
    sp.add_argument("--to", metavar="NEW", help="also copy what is intact into a new database NEW")

    sp = cmd("export", cmd_export, "export everything (concepts, vectors, links, embedder, "
             "options, index) for `sutradb import`")
    sp.add_argument("--out", help="a directory (Parquet or JSONL tables and a manifest), or a "
                    ".jsonl file (default: JSONL on stdout)")
    sp.add_argument("--format", choices=("jsonl", "parquet"),
                    help="the tables of a directory (default parquet; needs pyarrow); a file "
                    "or stdout is JSONL")
    sp.add_argument("--vectors", action="store_true",
                    help="(vectors are always exported; kept for old scripts)")

    sub.add_parser("bench", help="run the performance suite (sutradb bench --help)",
                   add_help=False)
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        try:
            return int(cmd_bench(None, argv[1:]) or 0)
        except UsageError as e:
            print(f"sutradb bench: {e}", file=sys.stderr)
            return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except UsageError as e:
        print(f"sutradb {args.command}: {e}", file=sys.stderr)
        return 2
    except (SutraError, KeyError, ValueError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"sutradb {args.command}: {type(e).__name__}: {msg}", file=sys.stderr)
        return 1
    return rc if isinstance(rc, int) else 0
