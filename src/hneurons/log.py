"""One output channel: log lines through :mod:`logging`, progress bars through tqdm, both on stderr.

Why one channel: stage lines, library warnings and progress bars used to come from ``print``,
``rich`` and three tqdm call sites each with its own idea of when to draw, so a redirected log
was full of ``\\r`` fragments and ``--quiet`` was impossible. Here:

* :func:`say` (stage progress lines), :func:`warn` and every ``logging.getLogger("hneurons…")``
  record go to one stderr handler, printed with ``tqdm.write`` so they never tear a live bar;
* :func:`progress_bar` is a tqdm bar drawn only when stderr is a terminal and the level is not
  quiet; when it is not drawn, closing it logs one summary line at debug level instead;
* :func:`configure` sets the level (``--quiet``: warnings only; ``--verbose``: debug) and
  :func:`run_log` copies everything, with timestamps, into a run's ``run.log``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

LOGGER = "hneurons"
RUN_LOG = "run.log"
_logger = logging.getLogger(LOGGER)
_state = {"configured": False, "quiet": False}


class _BarSafeHandler(logging.StreamHandler):
    """A stderr handler that prints through ``tqdm.write``, so a line never lands inside a live bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # a closed stderr must not turn a log line into a crash
            self.handleError(record)


def configure(quiet: bool = False, verbose: bool = False) -> None:
    """Route the package's log lines to stderr at the chosen level (the CLI calls this once).

    ``quiet`` shows warnings and errors only and hides progress bars; ``verbose`` adds debug lines.
    """
    for h in [h for h in _logger.handlers if isinstance(h, _BarSafeHandler)]:
        _logger.removeHandler(h)
    handler = _BarSafeHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    _logger.addHandler(handler)
    _logger.setLevel(logging.DEBUG)
    _logger.propagate = False
    _state.update(configured=True, quiet=quiet)


def _ensure() -> None:
    if not _state["configured"]:
        configure()


def say(message: str) -> None:
    """A progress line ("[probe] running"): shown unless ``--quiet``, always kept in ``run.log``."""
    _ensure()
    _logger.info(message)


def warn(message: str) -> None:
    """A warning line: shown even with ``--quiet``."""
    _ensure()
    _logger.warning(message)


def debug(message: str) -> None:
    """A detail line: shown with ``--verbose``, always kept in ``run.log``."""
    _ensure()
    _logger.debug(message)


def bars_enabled() -> bool:
    """Whether progress bars are drawn: stderr is a terminal and the level is not quiet."""
    return not _state["quiet"] and sys.stderr.isatty()


class _Bar(tqdm):
    """A tqdm bar that, when not drawn, logs one summary line at debug level as it closes."""

    def _hn_setup(self, desc: str, unit: str, summary: bool) -> None:
        self._hn = {"desc": desc, "unit": unit, "summary": summary, "n": 0, "t0": time.monotonic()}

    def update(self, n: float | None = 1) -> bool | None:
        self._hn["n"] += n or 0
        return super().update(n)

    def __iter__(self) -> Iterator[Any]:
        for item in super().__iter__():
            if self.disable:
                self._hn["n"] += 1
            yield item

    def close(self) -> None:
        hn = getattr(self, "_hn", None)
        if hn and hn["summary"]:
            hn["summary"] = False
            n = hn["n"] if self.disable else self.n
            of = f"/{self.total}" if self.total is not None else ""
            debug(f"{hn['desc'] or 'progress'}: {n:g}{of} {hn['unit']} in {time.monotonic() - hn['t0']:.1f} s")
        super().close()


def progress_bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", enabled: bool = True, **kwargs: Any) -> tqdm:
    """A progress bar (tqdm's interface: iterate it, or ``update``/``close``, or use it as ``with``).

    ``enabled=False`` (a caller's ``progress=False``) or a non-terminal stderr or ``--quiet`` draws
    nothing, so a redirected log holds no ``\\r`` fragments; an undrawn bar that was enabled logs
    one summary line when it closes (kept in ``run.log``).
    """
    kwargs.pop("disable", None)
    draw = enabled and bars_enabled()
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    bar = _Bar(iterable, total=total, desc=desc, unit=unit, disable=not draw, file=sys.stderr, **kwargs)
    bar._hn_setup(desc, unit, enabled and not draw)
    return bar


@contextlib.contextmanager
def run_log(root: str | Path) -> Iterator[Path]:
    """Copy every log line, with a timestamp, into ``root/run.log`` (appended) while the block runs."""
    _ensure()
    path = Path(root) / RUN_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    handler.setLevel(logging.DEBUG)
    _logger.addHandler(handler)
    try:
        yield path
    finally:
        _logger.removeHandler(handler)
        handler.close()
