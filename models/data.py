"""Readers for every data set in the shared data folder (see ../shared/data/README.md).

Each reader takes the data root (the folder holding `nli/`, `sts/`, ...) and returns plain
Python records; nothing here tokenises. Missing files raise FileNotFoundError with the path.
"""

from __future__ import annotations

import html
import os
import random
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

DEFAULT_DATA_ROOT = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
NLI_LABELS = ("entailment", "neutral", "contradiction")


def data_root(path: str | os.PathLike | None = None) -> Path:
    """The data folder: the argument, else $GENSEN_DATA, else ../shared/data beside the repo."""
    return Path(path or os.environ.get("GENSEN_DATA") or DEFAULT_DATA_ROOT)


@dataclass(frozen=True)
class Pair:
    """Two sentences with a class label (int) or a similarity score (float)."""

    a: str
    b: str
    label: int | float


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


# --- NLI ---------------------------------------------------------------------------------------


def read_snli(root: Path, split: str) -> list[Pair]:
    """SNLI `dev` or `test` (SentEval layout), labels as indices into NLI_LABELS."""
    folder = root / "nli" / "snli"
    s1, s2 = _lines(folder / f"s1.{split}"), _lines(folder / f"s2.{split}")
    labels = _lines(folder / f"labels.{split}")
    return [
        Pair(a.strip(), b.strip(), NLI_LABELS.index(y.strip()))
        for a, b, y in zip(s1, s2, labels, strict=True)
        if y.strip() in NLI_LABELS
    ]


@dataclass(frozen=True)
class SickPair:
    a: str
    b: str
    relatedness: float
    entailment: int


def read_sick(root: Path, split: str) -> list[SickPair]:
    """SICK `train` or `trial`: relatedness 1-5 and an entailment label index."""
    rows = _lines(root / "nli" / "sick" / f"SICK_{split}.txt")[1:]
    out = []
    for row in rows:
        cols = row.split("\t")
        if len(cols) >= 5:
            label = NLI_LABELS.index(cols[4].strip().lower())
            out.append(SickPair(cols[1], cols[2], float(cols[3]), label))
    return out


def read_rte(root: Path) -> list[Pair]:
    """RTE 1-3 dev and test: label 1 when the text entails the hypothesis."""
    out = []
    for path in sorted((root / "nli" / "rte").glob("rte*.xml")):
        for pair in ElementTree.parse(path).getroot().iter("pair"):
            value = (pair.get("value") or pair.get("entailment") or "").upper()
            text, hyp = pair.findtext("t"), pair.findtext("h")
            if text and hyp and value in ("TRUE", "YES", "FALSE", "NO"):
                out.append(
                    Pair(
                        " ".join(text.split()), " ".join(hyp.split()), int(value in ("TRUE", "YES"))
                    )
                )
    return out


# --- similarity --------------------------------------------------------------------------------


def read_stsb(root: Path, split: str) -> list[Pair]:
    """STS Benchmark `train` or `dev`: score 0-5 (columns 5-7; extra columns ignored)."""
    out = []
    for row in _lines(root / "sts" / "stsb" / f"sts-{split}.csv"):
        cols = row.split("\t")
        if len(cols) >= 7:
            out.append(Pair(cols[5], cols[6], float(cols[4])))
    return out


def read_sts12(root: Path) -> list[Pair]:
    """STS 2012 train (MSRpar, MSRvid, SMTeuroparl): score 0-5."""
    folder = root / "sts" / "sts12_train"
    out = []
    for name in ("MSRpar", "MSRvid", "SMTeuroparl"):
        inputs = _lines(folder / f"STS.input.{name}.txt")
        scores = _lines(folder / f"STS.gs.{name}.txt")
        for row, score in zip(inputs, scores, strict=True):
            a, b = row.split("\t")[:2]
            out.append(Pair(a, b, float(score)))
    return out


# --- paraphrase --------------------------------------------------------------------------------


def read_mrpc(root: Path) -> list[Pair]:
    """MRPC train: label 1 for a paraphrase."""
    path = root / "paraphrase" / "mrpc" / "msr_paraphrase_train.txt"
    rows = _lines(path)[1:]
    out = []
    for row in rows:
        cols = row.split("\t")
        if len(cols) >= 5:
            out.append(Pair(cols[3], cols[4], int(cols[0].lstrip("\ufeff"))))
    return out


MRPC_DEV_FRACTION = 0.2
MRPC_DEV_SEED = "mrpc-dev"  # fixed, so that every config and run holds out the same pairs


def mrpc_split(root: Path) -> tuple[list[Pair], list[Pair]]:
    """MRPC train as (train, dev): a fixed, seeded fifth of its pairs is dev, kept out of all
    training (tasks, distillation corpus, head fitting) so that the paraphrase figure is honest."""
    pairs = read_mrpc(root)
    order = list(range(len(pairs)))
    random.Random(MRPC_DEV_SEED).shuffle(order)
    dev = set(order[: round(len(pairs) * MRPC_DEV_FRACTION)])
    return [p for i, p in enumerate(pairs) if i not in dev], [pairs[i] for i in sorted(dev)]


def read_ppdb(root: Path) -> list[tuple[str, str]]:
    """PPDB lexical synonym pairs (positives only) from the NLTK zip."""
    with zipfile.ZipFile(root / "paraphrase" / "ppdb" / "mwa_ppdb.zip") as archive:
        name = next(n for n in archive.namelist() if not n.endswith("/"))
        text = archive.read(name).decode("utf-8", errors="replace")
    return [tuple(line.split("\t")[:2]) for line in text.splitlines() if line.count("\t") >= 1]


# --- transfer (SentEval classification) --------------------------------------------------------

TRANSFER_TASKS = ("MR", "CR", "SUBJ", "MPQA", "SST2", "TREC")
_BINARY_FILES = {
    "MR": ("MR/rt-polarity.neg", "MR/rt-polarity.pos"),
    "CR": ("CR/custrev.neg", "CR/custrev.pos"),
    "SUBJ": ("SUBJ/subj.objective", "SUBJ/subj.subjective"),
    "MPQA": ("MPQA/mpqa.neg", "MPQA/mpqa.pos"),
}


@dataclass(frozen=True)
class TransferSet:
    """A classification set: `train` always, `test` when the set has a fixed split."""

    train: list[tuple[str, int]]
    test: list[tuple[str, int]] | None = None
    dev: list[tuple[str, int]] | None = None


def read_transfer(root: Path, task: str) -> TransferSet:
    """One SentEval transfer task by name (see TRANSFER_TASKS)."""
    folder = root / "transfer"
    if task in _BINARY_FILES:
        rows = []
        for label, rel in enumerate(_BINARY_FILES[task]):
            rows += [(s, label) for s in _lines(folder / rel) if s.strip()]
        return TransferSet(train=rows)
    if task == "SST2":
        split = {
            s: _read_sst(folder / "SST" / "binary" / f"sentiment-{s}")
            for s in ("train", "dev", "test")
        }
        return TransferSet(train=split["train"], dev=split["dev"], test=split["test"])
    if task == "TREC":
        return TransferSet(
            train=_read_trec(folder / "TREC" / "train_5500.label"),
            test=_read_trec(folder / "TREC" / "TREC_10.label"),
        )
    raise ValueError(f"unknown transfer task {task!r}; known: {TRANSFER_TASKS}")


def _read_sst(path: Path) -> list[tuple[str, int]]:
    rows = []
    for line in _lines(path):
        text, _, label = line.rpartition("\t")
        if text.strip():
            rows.append((text.strip(), int(label)))
    return rows


_TREC_CLASSES = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")


def _read_trec(path: Path) -> list[tuple[str, int]]:
    rows = []
    for line in path.read_text(encoding="latin-1").splitlines():
        coarse, _, text = line.partition(" ")
        rows.append((text.strip(), _TREC_CLASSES.index(coarse.split(":")[0])))
    return rows


# --- unlabeled running text --------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
# Sets that duplicate evaluation data (MR, SUBJ) are left out of training text.
_PLAIN_LINE_FILES = ("webtext/*.txt", "movie_reviews/*/*.txt")
_PROSE_FILES = ("abc/*.txt", "state_union/*.txt", "inaugural/*.txt")
_TEXT_FILES = (
    "fortunes_items.txt",
    "kjv_verses.txt",
    "wordnet_glosses.txt",
    "wordnet_examples.txt",
)


def _clean(sentence: str) -> str:
    sentence = sentence.replace("``", '"').replace("''", '"')
    return " ".join(sentence.split())


def read_unlabeled(root: Path) -> Iterator[tuple[str, str]]:
    """Yield (corpus, sentence) from the NLTK corpora and plain text folders, in document order."""
    corpora = root / "unlabeled" / "nltk_data" / "corpora"
    yield from (("brown", s) for s in _nltk_sents(corpora / "brown"))
    yield from (("masc", s) for s in _masc_sents(corpora / "masc_tagged"))
    for pattern in _PLAIN_LINE_FILES:
        for path in sorted(corpora.glob(pattern)):
            yield from ((pattern.split("/")[0], _clean(s)) for s in _lines(path) if s.strip())
    for path in sorted((corpora / "pros_cons").glob("Integrated*.txt")):
        for line in _lines(path):
            text = html.unescape(re.sub(r"<[^>]+>", "", line)).strip()
            if text:
                yield "pros_cons", text
    for pattern in _PROSE_FILES:
        for path in sorted(corpora.glob(pattern)):
            text = " ".join(path.read_text(encoding="latin-1").split())
            yield from ((pattern.split("/")[0], s) for s in _SENTENCE_END.split(text) if s)
    for name in _TEXT_FILES:
        yield from (
            (name.split("_")[0], s.strip())
            for s in _lines(root / "unlabeled" / "text" / name)
            if s.strip()
        )


def _nltk_sents(folder: Path) -> Iterator[str]:
    """Brown corpus files: one tagged sentence per line (word/TAG tokens)."""
    for path in sorted(p for p in folder.iterdir() if re.fullmatch(r"c[a-r]\d\d", p.name)):
        for line in _lines(path):
            words = [tok.rsplit("/", 1)[0] for tok in line.split()]
            if words:
                yield _clean(" ".join(words))


def _masc_sents(folder: Path) -> Iterator[str]:
    """MASC tagged files: sentences of word_TAG tokens, one per line."""
    for path in sorted(folder.rglob("*.txt")):
        if path.name in ("categories.txt", "README.txt"):
            continue
        for line in _lines(path):
            words = [tok.rsplit("_", 1)[0] for tok in line.split()]
            if len(words) > 1:
                yield _clean(" ".join(words))
