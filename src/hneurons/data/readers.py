"""The one reader for every user-facing JSON / JSON-lines / CSV / parquet input.

``score``, ``judge``, the dataset registry and the benchmark files all read through
:func:`iter_rows`, so a bad file gets the same one-line :class:`~hneurons.errors.DataError`
wherever it is given, in the compiler style ``FILE:LINE: what is wrong; what to do``. It covers
the inputs that escape hand-written readers as tracebacks: bytes that are not UTF-8, an integer
longer than Python's ``sys.get_int_max_str_digits()`` (``ValueError``), JSON nested deeper than
the parser's recursion limit (``RecursionError``), a directory given as a file, a truncated gzip
file and an unreadable CSV field. Outputs are checked by :func:`check_output_path` before any
work is done, so ``-o DIR`` fails at once instead of after scoring.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hneurons.errors import DataError, HNeuronsError

Row = tuple[int, dict[str, Any]]  # (1-based line, or record number for JSON arrays and parquet; the row)
OnBad = Callable[[int, str], None]  # row-level error handler: (line, message); the row is skipped
FORMATS = (".jsonl", ".json", ".csv", ".parquet")


def where(path: str | Path, line: int | None = None, field: str | None = None) -> str:
    """``FILE:LINE: field 'x'`` — the prefix every input error starts with."""
    text = f"{path}:{line}" if line is not None else str(path)
    return f"{text}: field '{field}'" if field else text


def check_input_path(path: str | Path, what: str = "input file") -> Path:
    """The path of an existing, readable file, or one line saying what it is instead."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise DataError(f"{what} {p} is a directory, not a file; pass the file itself")
    if not p.exists():
        raise DataError(f"{what} {p} does not exist; check the path")
    if not p.is_file():
        raise DataError(f"{what} {p} is not a regular file; pass a .jsonl, .json or .csv file")
    return p


def check_output_path(path: str | Path, what: str = "--output") -> Path:
    """An output file path that can be written: not a directory, its parent creatable.

    Checked before any work so ``-o runs/`` fails at once, not after an hour of scoring.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise DataError(f"{what} {p} is a directory; give a file path, e.g. {p / 'out.jsonl'}")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DataError(f"{what} {p}: {parent} is a file, not a folder; choose another path")
            break
    return p


def format_of(path: Path) -> str:
    """The input format from the name (``.gz`` ignored), or one line listing the supported ones."""
    name = path.name.lower().removesuffix(".gz")
    for fmt in FORMATS:
        if name.endswith(fmt):
            return fmt
    raise DataError(f"{path}: unsupported file type; choose one of {', '.join(FORMATS)} (optionally .gz)")


def parse_json(text: str, path: str | Path, line: int | None) -> Any:
    """``json.loads`` with every failure turned into one line naming file and line.

    Besides malformed JSON this catches the two inputs the parser itself cannot survive: an
    integer over the interpreter's digit limit (``ValueError``) and nesting deeper than the
    recursion limit (``RecursionError``).
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        at = line if line is not None else e.lineno
        raise DataError(f"{where(path, at)}: not valid JSON ({e.msg}, column {e.colno}); fix or remove the line") from None
    except RecursionError:
        raise DataError(f"{where(path, line)}: JSON nested too deeply to read (over ~{sys.getrecursionlimit()} "
                        "levels); flatten the value") from None
    except ValueError as e:  # json.loads → int(): "Exceeds the limit (4300 digits) for integer string conversion"
        raise DataError(f"{where(path, line)}: a number longer than {sys.get_int_max_str_digits()} digits "
                        f"({str(e).split(':')[0].strip()}); write it as a string") from None


def _decode(raw: bytes, path: Path, line: int | None) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        at = line if line is not None else raw[:e.start].count(b"\n") + 1
        raise DataError(f"{where(path, at)}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save the file as UTF-8") from None


def _open_bytes(path: Path) -> io.BufferedIOBase:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _object(value: Any, path: Path, line: int, on_bad: OnBad | None) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    message = f"expected a JSON object, got {type(value).__name__}"
    if on_bad is None:
        raise DataError(f"{where(path, line)}: {message}")
    on_bad(line, message)
    return None


def _jsonl(path: Path, on_bad: OnBad | None) -> Iterator[Row]:
    with _open_bytes(path) as fh:
        for i, raw in enumerate(fh, 1):
            text = _decode(raw, path, i)
            if not text.strip():
                continue
            try:
                row = _object(parse_json(text, path, i), path, i, on_bad)
            except DataError as e:
                if on_bad is None:
                    raise
                on_bad(i, str(e).removeprefix(f"{where(path, i)}: "))
                continue
            if row is not None:
                yield i, row


def _json(path: Path, on_bad: OnBad | None) -> Iterator[Row]:
    with _open_bytes(path) as fh:
        text = _decode(fh.read(), path, None)
    try:
        data = parse_json(text, path, None)
    except DataError:
        if "Extra data" not in _first_error(text):
            raise
        yield from _jsonl(path, on_bad)  # a .json file holding one object per line
        return
    if isinstance(data, dict):  # {"Data": [...]} as in the original TriviaQA json
        data = next((v for k, v in data.items() if k.lower() == "data" and isinstance(v, list)), None)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of objects (or an object with a 'Data' list)")
    for i, value in enumerate(data, 1):
        row = _object(value, path, i, on_bad)
        if row is not None:
            yield i, row


def _first_error(text: str) -> str:
    try:
        json.loads(text)
    except (ValueError, RecursionError) as e:
        return str(e)
    return ""


def _csv(path: Path) -> Iterator[Row]:
    with _open_bytes(path) as fh:
        text = _decode(fh.read(), path, None)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        if not reader.fieldnames:
            raise DataError(f"{where(path, 1)}: the CSV file has no header row; the first line names the columns")
        for row in reader:
            if None in row:
                raise DataError(f"{where(path, reader.line_num)}: more values than the header has columns; "
                                "quote values that contain commas")
            yield reader.line_num, {k: v for k, v in row.items()}
    except csv.Error as e:
        raise DataError(f"{where(path, reader.line_num)}: not valid CSV ({e}); fix the quoting") from None


def _parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path}: not a readable parquet file ({e})") from None
    # The TriviaQA parquet carries large unused columns (entity_pages, search_results).
    wanted = [c for c in pf.schema_arrow.names if c not in ("entity_pages", "search_results")]
    i = 0
    for batch in pf.iter_batches(columns=wanted, batch_size=4096):
        for row in batch.to_pylist():
            i += 1
            yield i, row


def iter_rows(path: str | Path, *, formats: tuple[str, ...] = FORMATS, on_bad: OnBad | None = None,
              what: str = "input file") -> Iterator[Row]:
    """Yield ``(line, row)`` from a .jsonl / .json / .csv / .parquet file (each optionally .gz).

    ``line`` is the 1-based line (JSON lines, CSV) or record number (JSON arrays, parquet).
    Every failure is one :class:`DataError` naming ``FILE:LINE``. With ``on_bad``, a row that is
    not valid JSON or not an object is reported to it and skipped (``hneurons judge`` judges the
    other rows); problems with the file itself (missing, not UTF-8, truncated) always raise.
    """
    p = check_input_path(path, what)
    fmt = format_of(p)
    if fmt not in formats:
        raise DataError(f"{p}: {fmt} files are not read here; choose one of {', '.join(formats)}")
    readers = {".jsonl": lambda: _jsonl(p, on_bad), ".json": lambda: _json(p, on_bad),
               ".csv": lambda: _csv(p), ".parquet": lambda: _parquet(p)}
    try:
        yield from readers[fmt]()
    except (OSError, EOFError) as e:
        raise DataError(f"{p}: cannot read the file ({e.strerror or e}); is it a valid, complete file?") from None


def read_rows(path: str | Path, **kwargs: Any) -> list[Row]:
    """All rows of :func:`iter_rows` (for inputs read whole, e.g. before a model loads)."""
    return list(iter_rows(path, **kwargs))


def read_json_object(path: Path, error: type[HNeuronsError], restore: str) -> dict[str, Any]:
    """A JSON file that must hold one object (a model's config, a run's manifest), or one line naming it.

    ``error`` is the caller's error class (a model file raises ModelLoadError, a run file DataError);
    ``restore`` says how to get a good copy back.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise error(f"{path} is not valid JSON ({detail}); {restore}") from None
    except OSError as exc:
        raise error(f"{path} cannot be read ({exc.strerror}); check its permissions") from None
    if not isinstance(data, dict):
        raise error(f"{path} holds a JSON {type(data).__name__}, not an object; {restore}")
    return data
