"""Progress display of long database operations: learning texts
(:meth:`Database.add`) and the stages of index building.

``progress`` (the option of :func:`sutradb.open`, or the argument of ``add``) is a
bool or a callable ``(done, total)``; True shows a `rich <https://rich.readthedocs.io>`_
bar on a terminal (when rich is installed) and, for index building, plain lines on
stderr elsewhere.
"""

from __future__ import annotations

import sys

__all__ = ["progress_bar", "stage_progress"]


def progress_bar(progress, total: int, step: int):
    """A callable ``(done, total)`` for :meth:`Database.add`, or None. ``done=None``
    closes it. ``progress``: True/False, a callable, or None (a bar on a terminal when
    there is more than one batch)."""
    if callable(progress) and not isinstance(progress, bool):
        return lambda done, n: None if done is None else progress(done, n)
    if progress is None:
        progress = total > step and sys.stderr.isatty()
    if not progress:
        return None
    try:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)
    except ImportError:
        return None
    import time as _time
    bar = Progress(TextColumn("[bold]learning"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), transient=True)
    bar.start()
    task = bar.add_task("learn", total=total, rate="")
    t0 = _time.perf_counter()

    def update(done, n):
        if done is None:
            bar.stop()
            return
        rate = done / max(_time.perf_counter() - t0, 1e-9)
        bar.update(task, completed=done, rate=f"{rate:,.0f} concepts/s")
    return update


def stage_progress(progress, what: str = "training the quantizer (subspaces)"):
    """``progress(done, total)`` for one stage of index building: the user's
    callable, a rich bar (``progress=True`` on a terminal), plain lines on stderr
    (``progress=True`` elsewhere), or None.

    Parameters
    ----------
    progress : bool or callable
        The database's ``progress`` option.
    what : str
        The stage, as shown.
    """
    p = progress
    if callable(p) and not isinstance(p, bool):
        return p
    if not p:
        return None
    if sys.stderr.isatty():
        try:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress,
                                       TextColumn, TimeElapsedColumn, TimeRemainingColumn)
        except ImportError:
            pass
        else:
            bar = Progress(TextColumn(f"[bold]sutradb: {what}"), BarColumn(),
                           MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
            state = {}

            def cb(done, total):
                if "task" not in state:
                    bar.start()
                    state["task"] = bar.add_task(what, total=total)
                bar.update(state["task"], completed=done)
                if done >= total:
                    bar.stop()
            return cb

    def cb(done, total):
        sys.stderr.write(f"\rsutradb: {what} {done}/{total}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return cb
