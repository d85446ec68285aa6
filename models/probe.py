"""What a linear classifier reads from a representation: the evaluation's transfer tasks
(`models.evaluate.transfer`, the same logistic regression and folds) on vectors other than a
bundle's served one, to tell what an encoder holds from what its output keeps, and what a
teacher could give it at best.

    python -m models.probe models/gensen-base models/gensen-base:features \\
        teacher:all-MiniLM-L6-v2/4 models/gensen-base+teacher:all-MiniLM-L6-v2/4

Each argument names one representation:
  BUNDLE              the bundle's served vector
  BUNDLE:features     the pooled BiGRU features that the served vector is projected from
  teacher:NAME        a teacher's sentence vector (paraphrase-MiniLM-L3-v2, all-MiniLM-L6-v2)
  teacher:all-MiniLM-L6-v2/K (or /layerK)
                      all-MiniLM-L6-v2's layer K, mean-pooled (0: the word embeddings; 6: last)
  A+B                 two of these side by side
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np

from models import data, evaluate, teacher

Embed = Callable[[list[str]], np.ndarray]


def representation(spec: str) -> Embed:
    """The `embed` of one argument (see the module's docstring)."""
    if "+" in spec:
        parts = [representation(part) for part in spec.split("+")]
        return lambda sentences: np.hstack([embed(sentences) for embed in parts])
    if spec.startswith("teacher:"):
        name = spec.removeprefix("teacher:")
        network, _, layer = name.partition("/")
        if layer and network == teacher.MINILM_L6:
            return teacher.MiniLML6Teacher(layer=int(layer.removeprefix("layer"))).embed
        if name not in teacher.TEACHERS:
            raise ValueError(f"unknown teacher {name!r}; known: {', '.join(teacher.TEACHERS)}")
        return teacher.TEACHERS[name]().embed
    if spec.endswith(":features"):
        bundle = evaluate.OnnxBundle(Path(spec.removesuffix(":features")))
        return functools.partial(bundle.embed, output="features")
    return evaluate.OnnxBundle(Path(spec)).embed


def probe(spec: str, root: Path, tasks: tuple[str, ...] = data.TRANSFER_TASKS) -> dict[str, float]:
    """Transfer accuracy (%) per task on the representation `spec`, rounded as the evaluation's."""
    scores = evaluate.transfer(representation(spec), root, tasks)
    return {task: round(value, 1) for task, value in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("representations", nargs="+")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument(
        "--tasks", nargs="+", choices=data.TRANSFER_TASKS, default=list(data.TRANSFER_TASKS)
    )
    args = parser.parse_args()
    root = data.data_root(args.data)
    width = max(len(spec) for spec in args.representations)
    print(f"{'representation':<{width}}" + "".join(f"{t:>8}" for t in args.tasks))
    for spec in args.representations:
        scores = probe(spec, root, tuple(args.tasks))
        print(f"{spec:<{width}}" + "".join(f"{scores[t]:>8}" for t in args.tasks), flush=True)


if __name__ == "__main__":
    main()
