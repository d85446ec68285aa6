"""The bulk command: readers and their errors, output formats, resume after a kill (real service)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from gensen_client import Client, TooLarge, bulk

from models.tiny import tiny_sentences
from tests.service.conftest import REPO_ROOT, ServiceProcess


@pytest.fixture(scope="module")
def service(tiny_bundle: Path) -> Iterator[ServiceProcess]:
    process = ServiceProcess(tiny_bundle, "--max-inputs", "64", "--max-input-chars", "300")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def client(service: ServiceProcess) -> Iterator[Client]:
    with Client(service.url, concurrency=4) as c:
        yield c


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'client'}:{REPO_ROOT}"}
    command = [sys.executable, "-m", "gensen_client", "embed", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv", ".parquet"])
@pytest.mark.parametrize("out_suffix", [".npy", ".jsonl", ".parquet"])
def test_every_input_format_to_every_output_format(
    tmp_path: Path, client: Client, suffix: str, out_suffix: str
) -> None:
    texts = tiny_sentences(150, seed=1)
    source = tmp_path / f"in{suffix}"
    if suffix == ".txt":
        source.write_text("".join(f"{t}\n" for t in texts))
    elif suffix == ".jsonl":
        source.write_text(
            "".join(json.dumps({"doc": f"d{i}", "body": t}) + "\n" for i, t in enumerate(texts))
        )
    elif suffix == ".csv":
        source.write_text("doc,body\n" + "".join(f'd{i},"{t}"\n' for i, t in enumerate(texts)))
    else:
        pq.write_table(pa.table({"doc": [f"d{i}" for i in range(150)], "body": texts}), source)
    named = suffix != ".txt"
    out = tmp_path / f"out{out_suffix}"
    summary = bulk.embed_file(
        source,
        out,
        client.embed,
        column="body",
        id_column="doc" if named else None,
        chunk_size=40,
        progress=False,
    )
    want = client.embed(texts)
    if out_suffix == ".npy":
        got, ids = np.load(out), None
    elif out_suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        got, ids = np.array([r["embedding"] for r in rows]), [r["id"] for r in rows]
    else:
        table = pq.read_table(out)
        got, ids = np.array(table.column("vector").to_pylist()), table.column("id").to_pylist()
    np.testing.assert_allclose(got, want, atol=1e-6)
    if ids is not None:
        assert ids == ([f"d{i}" for i in range(150)] if named else list(range(1, 151)))
    assert summary["chunks"] == 4
    assert not (tmp_path / f"out{out_suffix}.partial").exists()


def test_bad_lines_are_named_and_nothing_is_written(tmp_path: Path, client: Client) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(
        b"a man is playing\n\nthe dog runs \xff\xfe here\n" + b"long " * 100 + b"\nfine\n"
    )
    out = tmp_path / "out.npy"
    with pytest.raises(bulk.BulkError) as failure:
        bulk.embed_file(source, out, client.embed, max_chars=300)
    message = str(failure.value)
    assert "3 bad input(s), nothing embedded" in message
    assert "line 2: empty or only whitespace" in message
    assert "line 3: not valid UTF-8 (byte 0xff at byte 13)" in message
    assert "line 4: 500 characters; the service takes at most 300" in message
    assert not out.exists()
    summary = bulk.embed_file(source, out, client.embed, max_chars=300, skip_bad=True)
    assert len(summary["skipped"]) == 3
    assert np.load(out).shape[0] == 2
    assert (tmp_path / "out.npy.ids.txt").read_text() == "1\n5\n"


def test_a_missing_column_is_named(tmp_path: Path, client: Client) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id,sentence\n1,hello\n")
    with pytest.raises(bulk.BulkError, match=r"no column 'text' \(columns: \['id', 'sentence'\]\)"):
        bulk.embed_file(source, tmp_path / "out.npy", client.embed)
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"text": "fine"}\n{"body": "no text"}\nnot json\n')
    with pytest.raises(bulk.BulkError) as failure:
        bulk.embed_file(jsonl, tmp_path / "out.npy", client.embed)
    assert "line 2: no field 'text'" in str(failure.value)
    assert "line 3: not JSON" in str(failure.value)


def test_a_failed_run_resumes_from_its_finished_chunks(tmp_path: Path, client: Client) -> None:
    texts = tiny_sentences(400, seed=2)
    source = tmp_path / "in.txt"
    source.write_text("".join(f"{t}\n" for t in texts))
    out = tmp_path / "out.npy"
    calls = []

    def dies_after_three(chunk: list[str]) -> np.ndarray:
        if len(calls) == 3:
            raise RuntimeError("killed")
        calls.append(len(chunk))
        return client.embed(chunk)

    with pytest.raises(RuntimeError, match="killed"):
        bulk.embed_file(source, out, dies_after_three, chunk_size=50, parallel_chunks=1)
    assert not out.exists()
    summary = bulk.embed_file(source, out, client.embed, chunk_size=50)
    assert summary["chunks_resumed"] == 3
    np.testing.assert_allclose(np.load(out), client.embed(texts), atol=1e-6)
    source.write_text("other text\n")  # a partial run of other input is never mixed in
    (tmp_path / "out.npy.partial").mkdir()
    (tmp_path / "out.npy.partial" / "manifest.json").write_text('{"fingerprint": "x"}')
    with pytest.raises(bulk.BulkError, match="holds a run on other input"):
        bulk.embed_file(source, out, client.embed)


def test_the_command_killed_halfway_finishes_complete_and_in_order(
    tmp_path: Path, service: ServiceProcess, client: Client
) -> None:
    texts = tiny_sentences(3000, seed=5)
    source = tmp_path / "in.txt"
    source.write_text("".join(f"{t}\n" for t in texts))
    out = tmp_path / "out.parquet"
    args = [str(source), str(out), "--url", service.url, "--chunk-size", "100"]
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'client'}:{REPO_ROOT}"}
    first = subprocess.Popen(
        [sys.executable, "-m", "gensen_client", "embed", *args],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    partial = tmp_path / "out.parquet.partial"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(partial.glob("chunk-*.npy"))) < 15:
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_before = len(list(partial.glob("chunk-*.npy")))
    assert 0 < done_before < 30
    assert not out.exists()
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stderr.strip().splitlines()[-1])
    assert summary["chunks_resumed"] == done_before  # only the chunks in flight are redone
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == list(range(1, 3001))
    np.testing.assert_allclose(
        np.array(table.column("vector").to_pylist()), client.embed(texts), atol=1e-6
    )


def test_the_command_reports_errors_without_a_traceback(
    tmp_path: Path, service: ServiceProcess
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("a,b\n1,2\n")
    result = run_cli(str(source), str(tmp_path / "out.npy"), "--url", service.url)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "no column 'text'" in result.stderr
    assert "Traceback" not in result.stderr


def test_local_mode_embeds_as_the_service_does(
    tmp_path: Path, tiny_bundle: Path, client: Client
) -> None:
    texts = [
        *tiny_sentences(30, seed=9),
        " ".join(tiny_sentences(5, seed=10)),
    ]  # one over 32 tokens
    source = tmp_path / "in.txt"
    source.write_text("".join(f"{t}\n" for t in texts))
    out = tmp_path / "out.npy"
    result = run_cli(str(source), str(out), "--local", str(tiny_bundle))
    assert result.returncode == 0, result.stderr
    assert len(texts[-1]) < 300  # the service fixture's limit
    with pytest.raises(TooLarge):  # the last text is over the tiny model's 32 tokens: windows
        client.embed(texts[-1:], truncate=False)
    np.testing.assert_allclose(np.load(out), client.embed(texts), atol=1e-5)


def _long_and_short_texts() -> list[str]:
    """Short texts and texts over the tiny model's 32 tokens (several windows each)."""
    short = tiny_sentences(8, seed=11)
    long = [" ".join(tiny_sentences(n, seed=12 + n)) for n in (4, 5)]
    return [short[0], long[0], *short[1:5], long[1], *short[5:]]


def _read_window_rows(out: Path) -> tuple[np.ndarray, list[dict]]:
    """The vectors of a window output and each row's fields (id, window, start, stop, tokens)."""
    if out.suffix == ".npy":
        sidecar = out.with_name(out.name + ".windows.jsonl")
        return np.load(out), [json.loads(line) for line in sidecar.read_text().splitlines()]
    if out.suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        return np.array([r.pop("embedding") for r in rows]), rows
    table = pq.read_table(out).to_pylist()
    return np.array([r.pop("vector") for r in table]), table


@pytest.mark.parametrize("out_suffix", [".npy", ".jsonl", ".parquet"])
def test_windows_give_a_row_per_window_with_its_span(
    tmp_path: Path, client: Client, out_suffix: str
) -> None:
    texts = _long_and_short_texts()
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    out = tmp_path / f"out{out_suffix}"
    summary = bulk.embed_file(
        source,
        out,
        client.embed_windows,
        windows=True,
        id_column="id",
        chunk_size=3,
        progress=False,
    )
    vectors, rows = _read_window_rows(out)
    want = client.embed_windows(texts)
    expected = [
        {"id": f"d{i}", "window": k, "start": w.start, "stop": w.stop, "tokens": w.tokens}
        for i, windows in enumerate(want)
        for k, w in enumerate(windows)
    ]
    assert rows == expected
    assert max(r["window"] for r in rows) >= 1  # the long texts really are several windows
    np.testing.assert_allclose(vectors, [w.embedding for ws in want for w in ws], atol=1e-6)
    assert summary["texts"] == len(texts)
    assert summary["rows"] == len(expected)
    by_text = {}
    for row in rows:  # the spans of each text cover it in order
        by_text.setdefault(row["id"], []).append((row["start"], row["stop"]))
    for i, text in enumerate(texts):
        spans = by_text[f"d{i}"]
        assert spans[0][0] == 0
        assert spans[-1][1] == len(text)
        assert all(a[0] < b[0] <= a[1] for a, b in itertools.pairwise(spans))


def test_a_windows_run_does_not_resume_a_run_of_text_vectors(
    tmp_path: Path, client: Client
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("".join(f"{t}\n" for t in _long_and_short_texts()))
    out = tmp_path / "out.npy"
    bulk.ChunkStore(out, bulk.fingerprint([], {}), 1)  # a partial run of other settings
    with pytest.raises(bulk.BulkError, match="other input or settings"):
        bulk.embed_file(source, out, client.embed_windows, windows=True, progress=False)


def test_local_windows_equal_the_service_windows(
    tmp_path: Path, tiny_bundle: Path, client: Client
) -> None:
    texts = _long_and_short_texts()
    source = tmp_path / "in.txt"
    source.write_text("".join(f"{t}\n" for t in texts))
    out = tmp_path / "out.jsonl"
    result = run_cli(str(source), str(out), "--local", str(tiny_bundle), "--windows")
    assert result.returncode == 0, result.stderr
    vectors, rows = _read_window_rows(out)
    want = client.embed_windows(texts)
    assert [(r["id"], r["start"], r["stop"]) for r in rows] == [
        (i + 1, w.start, w.stop) for i, ws in enumerate(want) for w in ws
    ]
    np.testing.assert_allclose(vectors, [w.embedding for ws in want for w in ws], atol=1e-5)
