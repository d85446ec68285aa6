"""Convert an original GenSen release (Subramanian et al., 2018) into a model bundle.

    python -m models.convert_gensen PREFIX --out models/gensen-original [--pooling last]

Reads `<PREFIX>.model` (the encoder's state dict: `src_embedding.weight`, `encoder.weight_ih_l0`,
..., `*_reverse`) and `<PREFIX>_vocab.pkl` (a Python 2 pickle with `word2id` and `id2word`;
<s>=0 <pad>=1 </s>=2 <unk>=3). Sizes and the number of layers are read from the weights. The
sentence vector is the original's: `last` (final states of both directions) or `max` pooling,
2 x hidden wide, no projection. The original had no trained NLI or paraphrase heads in its
release, so the bundle's heads are untrained placeholders, marked as such in model.json.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import torch
from torch import nn

from models.encoder import EncoderConfig, GensenEncoder, PairClassifier
from models.export import export_bundle
from models.vocabulary import new_tokenizer

SPECIAL_IDS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}


def load_vocabulary(path: Path) -> dict[str, int]:
    """word -> id from the release's pickle (Python 2 byte strings decoded as latin-1)."""
    with path.open("rb") as handle:
        raw = pickle.load(handle, encoding="latin1")
    word2id = raw["word2id"] if isinstance(raw, dict) and "word2id" in raw else raw
    vocab = {
        (w.decode("latin1") if isinstance(w, bytes) else w): int(i) for w, i in word2id.items()
    }
    wrong = {t: vocab.get(t) for t, i in SPECIAL_IDS.items() if vocab.get(t) != i}
    if wrong:
        raise ValueError(f"{path}: special tokens must be {SPECIAL_IDS}, found {wrong}")
    return vocab


def encoder_config(state: dict[str, torch.Tensor], pooling: str) -> EncoderConfig:
    """The architecture implied by the checkpoint's tensor shapes."""
    vocab_size, embedding_dim = state["src_embedding.weight"].shape
    hidden = state["encoder.weight_hh_l0"].shape[1]
    layers = sum(
        1 for k in state if k.startswith("encoder.weight_ih_l") and not k.endswith("_reverse")
    )
    return EncoderConfig(vocab_size, embedding_dim, hidden, layers, pooling, projection_dim=None)


def load_encoder(model_path: Path, pooling: str) -> GensenEncoder:
    state = torch.load(model_path, map_location="cpu", weights_only=False)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    encoder = GensenEncoder(encoder_config(state, pooling))
    wanted = set(encoder.state_dict())
    missing = wanted - state.keys()
    if missing:
        raise ValueError(f"{model_path}: not a GenSen encoder, missing {sorted(missing)}")
    encoder.load_state_dict({k: state[k] for k in wanted})
    return encoder.eval()


def convert(
    prefix: Path, out: Path, pooling: str = "last", lowercase: bool = False, name: str | None = None
) -> Path:
    """Write the bundle for the release at `prefix`; returns the bundle folder."""
    vocab = load_vocabulary(Path(f"{prefix}_vocab.pkl"))
    encoder = load_encoder(Path(f"{prefix}.model"), pooling)
    if len(vocab) != encoder.config.vocab_size:
        raise ValueError(
            f"vocabulary has {len(vocab)} words, embedding has {encoder.config.vocab_size} rows"
        )
    tokenizer = new_tokenizer(vocab, lowercase=lowercase, bos_eos=True)
    dim = encoder.config.output_dim
    heads = nn.ModuleDict({"nli": PairClassifier(dim, 3), "paraphrase": PairClassifier(dim, 2)})
    card = {
        "name": name or prefix.name,
        "version": "original",
        "lowercase": lowercase,
        "max_tokens": 128,
        "training": {
            "source": f"original GenSen release {prefix.name}",
            "heads": "untrained placeholders",
        },
    }
    return export_bundle(out, encoder, heads, tokenizer, None, card_extra=card)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "prefix", type=Path, help="path prefix of <prefix>.model and <prefix>_vocab.pkl"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pooling", choices=("last", "max"), default="last")
    parser.add_argument(
        "--lowercase", action="store_true", help="lowercase input (the release is cased)"
    )
    args = parser.parse_args()
    convert(args.prefix, args.out, args.pooling, args.lowercase)
    print(f"bundle written to {args.out}")


if __name__ == "__main__":
    main()
