"""Progress display of long database operations: learning texts
(:meth:`Database.add`) and the stages of index building.

``progress`` (the option of :func:`sutradb.open`, or the argument of ``add``) is a
bool or a callable ``(done, total)``. True shows a bar (count, throughput, ETA) on a
terminal (stderr), drawn by the first of these that is installed:

1. `rich <https://rich.readthedocs.io>`_ (``pip install rich``; in the ``bench`` extra),
2. `tqdm <https://tqdm.github.io>`_,
3. a small bar of this module, so a plain install (NumPy, scikit-learn, msgpack)
   shows one too.

Elsewhere (stderr not a terminal) index building writes plain lines to stderr and
learning shows nothing. rich stays optional: with its dependencies (Pygments,
markdown-it-py) it would add several megabytes to a core of three packages, for a
bar the built-in one draws well enough.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO, Union

__all__ = ["progress_bar", "stage_progress", "backend", "TextBar", "BACKENDS"]

#: A progress callback: ``(done, total)``.
Callback = Callable[[int, int], object]
#: The ``progress`` argument: a bool, a callback, or None (automatic).
ProgressArg = Union[bool, Callback, None]

#: The bar backends, in order of preference (the first installed one draws).
BACKENDS: tuple[str, ...] = ("rich", "tqdm", "text")


def backend() -> str:
    """The backend that draws bars here: the first of :data:`BACKENDS` that imports
    (``"text"``, the built-in bar, always does)."""
    for name in BACKENDS:
        if name == "text":
            return name
        try:
            __import__(f"{name}.progress" if name == "rich" else name)
        except ImportError:
            continue
        return name
    return "text"


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):      # no isatty, or a closed stream
        return False


def _duration(seconds: float) -> str:
    s = int(max(seconds, 0) + 0.5)
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


class TextBar:
    """A minimal terminal progress bar on one line of ``stream``: what, a bar,
    ``done/total``, percentage, throughput and ETA, redrawn with ``\\r`` at most
    ``1 / min_interval`` times a second (and always at the end).

    Parameters
    ----------
    what : str
        The label.
    total : int
        The count at completion.
    stream : file, optional
        Where to draw (default: ``sys.stderr`` at the time of the call).
    unit : str
        What is counted, for the throughput (``"concepts"`` gives ``"120 concepts/s"``);
        empty: no throughput.
    transient : bool
        Erase the line when closed (default: end it with a newline).
    width : int
        Characters of the bar itself.
    """

    def __init__(self, what: str, total: int, stream: Optional[TextIO] = None, *,
                 unit: str = "", transient: bool = False, width: int = 24,
                 min_interval: float = 0.1) -> None:
        self.what = what
        self.total = max(int(total), 0)
        self.stream = stream if stream is not None else sys.stderr
        self.unit = unit
        self.transient = transient
        self.width = width
        self.min_interval = min_interval
        self.done = 0
        self.closed = False
        self._t0 = time.perf_counter()
        self._last = -1.0
        self._len = 0

    def line(self) -> str:
        """The bar's current text."""
        total, done = self.total, min(self.done, self.total) if self.total else self.done
        frac = done / total if total else 1.0
        fill = int(frac * self.width)
        bar = "#" * fill + "-" * (self.width - fill)
        elapsed = time.perf_counter() - self._t0
        parts = [f"{self.what} [{bar}] {done}/{total} {frac * 100:3.0f}%"]
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.unit:
            parts.append(f"{rate:,.0f} {self.unit}/s")
        if done >= total:
            parts.append(f"in {_duration(elapsed)}")
        elif done and rate > 0:
            parts.append(f"ETA {_duration((total - done) / rate)}")
        else:
            parts.append("ETA -:--")
        return "  ".join(parts)

    def update(self, done: int) -> None:
        """Set the count; redraw when due (or at completion)."""
        if self.closed:
            return
        self.done = int(done)
        now = time.perf_counter()
        if self.done < self.total and now - self._last < self.min_interval:
            return
        self._last = now
        text = self.line()
        pad = " " * max(self._len - len(text), 0)
        self._len = len(text)
        self.stream.write("\r" + text + pad)
        self.stream.flush()

    def close(self) -> None:
        """End the line (or erase it, ``transient``)."""
        if self.closed:
            return
        self.closed = True
        if self._last < 0 and not self.transient:
            self._last = 0.0
            self.stream.write(self.line())
        if self.transient:
            self.stream.write("\r" + " " * self._len + "\r")
        else:
            self.stream.write("\n")
        self.stream.flush()


def _bar(what: str, total: int, stream: TextIO, unit: str, transient: bool
         ) -> tuple[Callable[[int], None], Callable[[], None]]:
    """(update(done), close()) of a bar on ``stream`` drawn by :func:`backend`."""
    name = backend()
    if name == "rich":
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
        columns = [TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn()]
        if unit:
            columns.append(TextColumn("{task.fields[rate]}"))
        columns += [TimeElapsedColumn(), TimeRemainingColumn()]
        rbar = Progress(*columns, console=Console(file=stream), transient=transient)
        rbar.start()
        task = rbar.add_task(what, total=total, rate="")
        t0 = time.perf_counter()

        def rupdate(done: int) -> None:
            rate = done / max(time.perf_counter() - t0, 1e-9)
            rbar.update(task, completed=done, rate=f"{rate:,.0f} {unit}/s")
        return rupdate, rbar.stop
    if name == "tqdm":
        from tqdm import tqdm
        tbar = tqdm(total=total, desc=what, unit=unit or "it", file=stream,
                    leave=not transient, dynamic_ncols=True)

        def tupdate(done: int) -> None:
            tbar.update(done - tbar.n)
        return tupdate, tbar.close
    bar = TextBar(what, total, stream, unit=unit, transient=transient)
    return bar.update, bar.close


def progress_bar(progress: ProgressArg, total: int, step: int
                 ) -> Optional[Callable[[Optional[int], int], object]]:
    """A callable ``(done, total)`` for :meth:`Database.add`, or None. ``done=None``
    closes it.

    Parameters
    ----------
    progress : bool, callable or None
        True: a bar on stderr when it is a terminal; a callable ``(done, total)``:
        called instead; None: a bar when there is more than one batch and stderr is a
        terminal; False: nothing.
    total : int
        Texts to learn.
    step : int
        Texts per batch.
    """
    if callable(progress) and not isinstance(progress, bool):
        user = progress
        return lambda done, n: None if done is None else user(done, n)
    stream = sys.stderr
    if progress is None:
        progress = total > step
    if not progress or not _isatty(stream):
        return None
    update, close = _bar("learning", total, stream, "concepts", transient=True)

    def cb(done: Optional[int], n: int) -> None:
        if done is None:
            close()
        else:
            update(done)
    return cb


def stage_progress(progress: ProgressArg, what: str = "training the quantizer (subspaces)"
                   ) -> Optional[Callback]:
    """``progress(done, total)`` for one stage of index building: the user's
    callable, a bar (``progress=True`` with stderr a terminal: see :func:`backend`),
    plain lines on stderr (``progress=True`` elsewhere), or None.

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
    label = f"sutradb: {what}"
    if _isatty(sys.stderr):
        state: dict[str, Callable[..., None]] = {}

        def bar_cb(done: int, total: int) -> None:
            if "update" not in state:
                state["update"], state["close"] = _bar(label, total, sys.stderr, "",
                                                       transient=False)
            state["update"](done)
            if done >= total:
                state["close"]()
                state.clear()
        return bar_cb

    def lines_cb(done: int, total: int) -> None:
        sys.stderr.write(f"\r{label} {done}/{total}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return lines_cb
