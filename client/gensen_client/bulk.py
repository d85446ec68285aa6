"""Embed a file of texts into a file of vectors, resumably, against one service or several.

    python -m gensen_client embed INPUT OUTPUT --url http://localhost:8080 [--url ...]
    python -m gensen_client embed INPUT OUTPUT --local models/gensen-base

Input: `.txt` (a text per line), `.jsonl`, `.csv` or `.parquet` (the `--column` holding the text,
and `--id-column` for ids; line or row numbers otherwise). Output: `.npy` (float32 rows in input
order), `.parquet` (id, vector) or `.jsonl` ({"id", "embedding"}).

With `--windows`, a row per window of each text instead of one per text: passage vectors of long
documents, each with the window's number in its text and its character span [start, stop) and
token count (`/embed`'s `windows: true`). `.jsonl` and `.parquet` carry them as fields beside the
id; `.npy` holds the vectors, and OUTPUT.windows.jsonl the id and span of each row.

Every input is checked before anything is sent: a missing column, an empty or whitespace-only
text, invalid UTF-8, a control character or a text longer than the service takes is an error
naming its line, unless `--skip-bad` (then it is left out and counted; with `.npy` output the
ids of the rows kept go to OUTPUT.ids.txt). The texts are embedded in chunks, each written
atomically to OUTPUT.partial/ as it completes; a run started again on the same input skips the
chunks already there, so a killed run loses at most the one chunk in flight. The output is written
whole, under a temporary name renamed at the end: a file at OUTPUT is always complete.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gensen_client._core import Window

INPUTS = (".txt", ".jsonl", ".csv", ".parquet")
OUTPUTS = (".npy", ".parquet", ".jsonl")
# what the service refuses in a text: control characters but tab and line breaks (Unicode Cc)
CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")


class BulkError(Exception):
    """A problem with the input, the output or the run; the message says which line or file."""


@dataclass(frozen=True)
class Record:
    id: Any
    text: str
    line: int  # 1-based line (text formats) or row (Parquet)


@dataclass(frozen=True)
class Problem:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


# --- reading ---------------------------------------------------------------------------------


def _decoded_lines(path: Path) -> Iterator[tuple[int, str | Problem]]:
    """(line number, text) per line, or a Problem for a line that is not UTF-8."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            raw = raw.rstrip(b"\r\n")
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield (
                    number,
                    Problem(
                        number, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start})"
                    ),
                )


def _read_txt(path: Path, column: str, id_column: str | None):
    for number, text in _decoded_lines(path):
        yield text if isinstance(text, Problem) else Record(number, text, number)


def _read_jsonl(path: Path, column: str, id_column: str | None):
    for number, line in _decoded_lines(path):
        if isinstance(line, Problem):
            yield line
            continue
        if not line.strip():
            yield Problem(number, "empty line (a JSON object was expected)")
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Problem(number, f"not JSON ({exc.msg})")
            continue
        yield _record(row, column, id_column, number)


def _read_csv(path: Path, column: str, id_column: str | None):
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise BulkError(f"{path}: line {line}: not valid UTF-8") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None or column not in reader.fieldnames:
        raise BulkError(f"{path}: no column {column!r} (columns: {reader.fieldnames})")
    if id_column is not None and id_column not in reader.fieldnames:
        raise BulkError(f"{path}: no id column {id_column!r} (columns: {reader.fieldnames})")
    for row in reader:
        yield _record(row, column, id_column, reader.line_num)


def _read_parquet(path: Path, column: str, id_column: str | None):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    for name in filter(None, (column, id_column)):
        if name not in table.column_names:
            raise BulkError(f"{path}: no column {name!r} (columns: {table.column_names})")
    texts = table.column(column).to_pylist()
    ids = table.column(id_column).to_pylist() if id_column else range(1, len(texts) + 1)
    for number, (identifier, text) in enumerate(zip(ids, texts, strict=True), start=1):
        if not isinstance(text, str):
            yield Problem(number, f"{column!r} is {type(text).__name__}, not a string")
        else:
            yield Record(identifier, text, number)


def _record(row: Any, column: str, id_column: str | None, number: int) -> Record | Problem:
    if not isinstance(row, dict) or column not in row:
        return Problem(number, f"no field {column!r}")
    if id_column is not None and id_column not in row:
        return Problem(number, f"no field {id_column!r}")
    text = row[column]
    if not isinstance(text, str):
        return Problem(number, f"{column!r} is {type(text).__name__}, not a string")
    return Record(row[id_column] if id_column else number, text, number)


READERS = {".txt": _read_txt, ".jsonl": _read_jsonl, ".csv": _read_csv, ".parquet": _read_parquet}


def read_records(
    path: Path, column: str, id_column: str | None, max_chars: int | None
) -> tuple[list[Record], list[Problem]]:
    """Every usable record, in order, and every problem found (see the module docstring)."""
    if path.suffix not in READERS:
        raise BulkError(f"{path}: input must end in one of {', '.join(INPUTS)}")
    if not path.is_file():
        raise BulkError(f"{path}: no such file")
    records, problems = [], []
    for item in READERS[path.suffix](path, column, id_column):
        problem = item if isinstance(item, Problem) else _text_problem(item, max_chars)
        if problem is None:
            records.append(item)
        else:
            problems.append(problem)
    return records, problems


def _text_problem(record: Record, max_chars: int | None) -> Problem | None:
    if not record.text.strip():
        return Problem(record.line, "empty or only whitespace")
    found = CONTROL.search(record.text)
    if found:
        return Problem(record.line, f"control character U+{ord(found.group()):04X}")
    if max_chars is not None and len(record.text) > max_chars:
        return Problem(
            record.line, f"{len(record.text)} characters; the service takes at most {max_chars}"
        )
    return None


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Progress:
    """Callbacks for a progress display (tqdm by default)."""

    total: int
    done: int = 0
    show: bool = True

    def __post_init__(self) -> None:
        self._bar = None
        if not self.show:
            return
        try:
            from tqdm import tqdm
        except ImportError:  # the bar is a nicety: without tqdm, a line per chunk
            self._bar = None
        else:
            self._bar = tqdm(total=self.total, initial=self.done, unit="text", smoothing=0.1)

    def advance(self, count: int) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
        elif self.show:
            print(f"{self.done}/{self.total} texts", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@dataclass(frozen=True)
class Rows:
    """A chunk's output: vectors [rows, dim], and with windows the window each row is."""

    vectors: np.ndarray
    # [rows, 5] int64 with windows: text (its index in the chunk), window, start, stop, tokens
    windows: np.ndarray | None = None

    @classmethod
    def of_windows(cls, per_text: list[list[Window]]) -> Rows:
        """The rows of each text's windows, in order."""
        found = [(i, k, w) for i, windows in enumerate(per_text) for k, w in enumerate(windows)]
        spans = np.array([(i, k, w.start, w.stop, w.tokens) for i, k, w in found], dtype=np.int64)
        vectors = np.stack([w.embedding for _, _, w in found]).astype(np.float32, copy=False)
        return cls(vectors, spans.reshape(-1, 5))

    def texts(self) -> int:
        """How many texts these rows come from."""
        return len(self.vectors) if self.windows is None else len(np.unique(self.windows[:, 0]))


def fingerprint(records: list[Record], settings: dict[str, Any]) -> str:
    """What a partial run must match to be resumed: the texts, their ids, the settings."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for record in records:
        digest.update(f"{record.id!r}\x00{record.text}\x01".encode())
    return digest.hexdigest()


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    os.replace(temporary, path)


def _save_npy(path: Path, vectors: np.ndarray) -> None:
    with path.open("wb") as handle:
        np.save(handle, vectors)


class ChunkStore:
    """OUTPUT.partial/: a manifest and one .npy per finished chunk."""

    def __init__(self, output: Path, key: str, chunks: int) -> None:
        self.folder = output.with_name(output.name + ".partial")
        self.folder.mkdir(exist_ok=True)
        manifest = self.folder / "manifest.json"
        if manifest.exists():
            known = json.loads(manifest.read_text())
            if known.get("fingerprint") != key:
                raise BulkError(
                    f"{self.folder} holds a run on other input or settings: remove it, or "
                    "choose another output"
                )
        else:
            _write_atomically(
                manifest, lambda p: p.write_text(json.dumps({"fingerprint": key, "chunks": chunks}))
            )

    def path(self, index: int) -> Path:
        return self.folder / f"chunk-{index:06d}.npy"

    def done(self, index: int) -> bool:
        return self.path(index).exists()

    def save(self, index: int, rows: Rows) -> None:
        """The window spans first: a chunk counts as done once its vectors are there."""
        if rows.windows is not None:
            windows = rows.windows
            _write_atomically(self._windows_path(index), lambda p: _save_npy(p, windows))
        _write_atomically(self.path(index), lambda p: _save_npy(p, rows.vectors))

    def load(self, index: int) -> Rows:
        spans = self._windows_path(index)
        return Rows(np.load(self.path(index)), np.load(spans) if spans.exists() else None)

    def _windows_path(self, index: int) -> Path:
        return self.folder / f"chunk-{index:06d}.windows.npy"

    def remove(self) -> None:
        shutil.rmtree(self.folder)


def embed_file(
    input_path: Path,
    output_path: Path,
    embed: Callable[[list[str]], Any],
    *,
    windows: bool = False,
    column: str = "text",
    id_column: str | None = None,
    max_chars: int | None = None,
    skip_bad: bool = False,
    chunk_size: int = 4096,
    parallel_chunks: int = 1,
    settings: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Embed `input_path` into `output_path` with `embed(texts) -> vectors`; returns a summary.

    `windows`: `embed(texts)` gives each text's windows (`Client.embed_windows`), and the output
    has a row per window (module docstring).
    `parallel_chunks` chunks are in flight at once (1: a kill loses at most one chunk; `embed`
    itself sends a chunk's requests concurrently); `settings` (model, options) go into the
    resume fingerprint.
    """
    if output_path.suffix not in OUTPUTS:
        raise BulkError(f"{output_path}: output must end in one of {', '.join(OUTPUTS)}")
    records, problems = read_records(input_path, column, id_column, max_chars)
    if problems and not skip_bad:
        listed = "\n  ".join(map(str, problems[:10]))
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise BulkError(
            f"{input_path}: {len(problems)} bad input(s), nothing embedded (--skip-bad leaves "
            f"them out):\n  {listed}{more}"
        )
    if not records:
        raise BulkError(f"{input_path}: no text to embed")
    parts = [records[i : i + chunk_size] for i in range(0, len(records), chunk_size)]
    key = fingerprint(records, {"column": column, "windows": windows, **(settings or {})})
    store = ChunkStore(output_path, key, len(parts))
    todo = [i for i in range(len(parts)) if not store.done(i)]
    resumed = len(parts) - len(todo)
    started = time.perf_counter()
    bar = Progress(
        len(records), sum(len(parts[i]) for i in range(len(parts)) if store.done(i)), progress
    )
    try:
        chunk_rows = Rows.of_windows if windows else Rows
        _run_chunks(
            parts, todo, lambda texts: chunk_rows(embed(texts)), store, bar, parallel_chunks
        )
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    rows = _joined([store.load(i) for i in range(len(parts))], chunk_size)
    _write_output(output_path, records, rows, bool(problems))
    store.remove()
    vectors = rows.vectors
    return {
        "texts": len(records),
        "rows": len(vectors),
        "skipped": [str(p) for p in problems],
        "chunks": len(parts),
        "chunks_resumed": resumed,
        "seconds": round(seconds, 2),
        "texts_per_s": round(sum(len(parts[i]) for i in todo) / seconds) if todo else None,
        "dim": int(vectors.shape[1]),
        "output": str(output_path),
    }


def _joined(chunks: list[Rows], chunk_size: int) -> Rows:
    """The chunks' rows in order, window rows numbering their texts over the whole input."""
    vectors = np.concatenate([c.vectors for c in chunks])
    if chunks[0].windows is None:
        return Rows(vectors)
    shift = np.array([chunk_size, 0, 0, 0, 0], dtype=np.int64)
    return Rows(vectors, np.concatenate([c.windows + i * shift for i, c in enumerate(chunks)]))


def _run_chunks(
    parts: list[list[Record]],
    todo: list[int],
    embed: Callable[[list[str]], Rows],
    store: ChunkStore,
    bar: Progress,
    parallel: int,
) -> None:
    with ThreadPoolExecutor(parallel, thread_name_prefix="gensen-bulk") as pool:
        pending = {}
        queue = iter(todo)
        for index in queue:
            pending[pool.submit(embed, [r.text for r in parts[index]])] = index
            if len(pending) >= parallel:
                break
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                index = pending.pop(future)
                rows = future.result()
                if rows.texts() != len(parts[index]):
                    raise BulkError(
                        f"chunk {index}: vectors of {rows.texts()} texts for {len(parts[index])}"
                    )
                store.save(index, Rows(rows.vectors.astype(np.float32, copy=False), rows.windows))
                bar.advance(len(parts[index]))
                following = next(queue, None)
                if following is not None:
                    pending[pool.submit(embed, [r.text for r in parts[following]])] = following


def _write_output(path: Path, records: list[Record], rows: Rows, skipped: bool) -> None:
    """The output file (and the .npy sidecars: the ids kept, or each row's window)."""
    columns = _columns(records, rows)
    vectors = rows.vectors
    if path.suffix == ".npy":
        _write_atomically(path, lambda p: _save_npy(p, vectors))
        if rows.windows is not None:
            _write_jsonl(path.with_name(path.name + ".windows.jsonl"), columns)
        elif skipped:
            ids = columns["id"]
            ids_path = path.with_name(path.name + ".ids.txt")
            _write_atomically(ids_path, lambda p: p.write_text("".join(f"{i}\n" for i in ids)))
    elif path.suffix == ".jsonl":
        _write_jsonl(path, {**columns, "embedding": vectors})
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        vector = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
        table = pa.table({**columns, "vector": vector})
        _write_atomically(path, lambda p: pq.write_table(table, p))


def _columns(records: list[Record], rows: Rows) -> dict[str, list[Any]]:
    """Each row's id, and with windows its window number, span and tokens."""
    if rows.windows is None:
        return {"id": [r.id for r in records]}
    texts, *spans = (rows.windows[:, k].tolist() for k in range(5))
    named = dict(zip(("window", "start", "stop", "tokens"), spans, strict=True))
    return {"id": [records[t].id for t in texts], **named}


def _write_jsonl(path: Path, columns: dict[str, Any]) -> None:
    names = list(columns)

    def write(target: Path) -> None:
        with target.open("w", encoding="utf-8") as handle:
            for values in zip(*columns.values(), strict=True):
                row = {
                    n: v.tolist() if isinstance(v, np.ndarray) else v
                    for n, v in zip(names, values, strict=True)
                }
                handle.write(json.dumps(row) + "\n")

    _write_atomically(path, write)
