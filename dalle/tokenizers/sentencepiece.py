"""`dalle tokenizer train`: a sentencepiece model trained on a dataset's normalized captions.

    dalle tokenizer train --config configs/shapes.py --config.data.tokenizer_path=/tmp/tok/shapes.model

Ids follow seqio/T5: pad 0, eos 1, unk 2, no BOS, so the model is used as `seqio.SentencePieceVocabulary(path)`
(`load_vocabulary`). Captions are normalized with dalle.data.text exactly as the tasks do before tokenizing; the
options used are stored beside the model (`<model>.json`) and checked when tasks load it.
`vocab_size` is a soft limit (`hard_vocab_limit=False`): a tiny caption vocabulary (the shapes world has ~40
words) yields a smaller model instead of an error; the actual size is printed and stored.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from typing import Any, Iterable, Iterator, Sequence

from ml_collections import ConfigDict

from dalle.cli.args import Parser
from dalle.data import text as text_lib

log = logging.getLogger(__name__)

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2


def iter_dataset_captions(data_config: ConfigDict, split: str = "train", limit: int = 0) -> Iterator[str]:
    """Raw captions of the configured dataset (tfds sources, or an encoded dataset), images left undecoded."""
    from dalle.data import sources

    if not sources.of(data_config).is_tfds:  # the captions exist only in data.encoded_dir
        from dalle.data import encode

        yield from encode.iter_encoded_captions(data_config.encoded_dir, split, limit)
        return
    import tensorflow_datasets as tfds

    from dalle.data import build

    builder = build.load_builder(data_config)
    if split not in builder.info.splits:
        raise ValueError(f"dataset {builder.name!r} has no split {split!r} (splits: {list(builder.info.splits)})")
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            decoders={"image": tfds.decode.SkipDecoding()})
    ds = ds.map(lambda ex: ex["caption"])
    if limit > 0:
        ds = ds.take(limit)
    for caption in ds.as_numpy_iterator():
        yield caption.decode("utf-8", errors="replace")


def train_tokenizer(
    captions: Iterable[str],
    model_path: str,
    vocab_size: int,
    *,
    model_type: str = "unigram",
    character_coverage: float = 0.9995,
    normalizer: text_lib.NormalizerOptions = text_lib.NormalizerOptions(),
    max_sentences: int = 2_000_000,
    seed_sentencepiece_size: int = 1_000_000,
    progress: bool = False,
) -> dict[str, Any]:
    """Trains and writes `model_path` (a `.model` file) and `model_path + '.json'`; returns that info dict.
    `progress`: a bar while captions are read and normalised, then a line around sentencepiece's own training."""
    import sentencepiece as spm

    if not model_path.endswith(".model"):
        raise ValueError(f"tokenizer path {model_path!r} must end with .model")
    os.makedirs(os.path.dirname(os.path.abspath(model_path)), exist_ok=True)
    start = time.time()
    count = 0
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        corpus = f.name
        if progress:
            from tqdm import tqdm

            captions = tqdm(captions, desc="tokenizer: captions", unit="caption", file=sys.stderr,
                            total=max_sentences or None, dynamic_ncols=True, mininterval=1.0)
        for caption in captions:
            norm = text_lib.normalize_caption(caption, normalizer)
            if norm:
                f.write(norm + "\n")
                count += 1
            if max_sentences and count >= max_sentences:
                break
    try:
        if progress and hasattr(captions, "close"):
            captions.close()
        if count == 0:
            raise ValueError("no non-empty captions to train the tokenizer on")
        if progress:
            print(f"tokenizer: training sentencepiece ({model_type}, {vocab_size} pieces) on {count} captions...",
                  file=sys.stderr, flush=True)
        spm.SentencePieceTrainer.train(
            input=corpus,
            model_prefix=model_path[: -len(".model")],
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            pad_id=PAD_ID,
            eos_id=EOS_ID,
            unk_id=UNK_ID,
            bos_id=-1,
            hard_vocab_limit=False,
            input_sentence_size=max_sentences,
            shuffle_input_sentence=True,
            seed_sentencepiece_size=seed_sentencepiece_size,
            num_threads=max(1, min(4, os.cpu_count() or 1)),
            minloglevel=2,
        )
    finally:
        os.unlink(corpus)
    sp = spm.SentencePieceProcessor(model_file=model_path)
    info = {
        "vocab_size": sp.get_piece_size(),
        "requested_vocab_size": vocab_size,
        "model_type": model_type,
        "num_captions": count,
        "seconds": round(time.time() - start, 3),
        "pad_id": PAD_ID, "eos_id": EOS_ID, "unk_id": UNK_ID,
        "normalizer": {"lowercase": normalizer.lowercase, "ascii_fold": normalizer.ascii_fold,
                       "max_chars": normalizer.max_chars},
    }
    with open(model_path + ".json", "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
    return info


def load_vocabulary(model_path: str, unknown_words: str = "keep"):
    """The seqio vocabulary of a trained model, reading unknown words as `data.unknown_words` says
    (dalle/tokenizers/known_words.py); raises naming the path (and the command) when it is missing."""
    from dalle.tokenizers import known_words

    return known_words.with_policy(_load_base(model_path), unknown_words)


def _load_base(model_path: str):
    import seqio

    if not model_path:
        raise ValueError("data.tokenizer_path is empty: train one with `dalle tokenizer train --config ...`")
    if os.path.isdir(model_path) or model_path.endswith((".json", "vocab.txt")):
        # A Hugging Face tokenizer directory: BART / RoBERTa byte-level BPE (a converted dalle-mini's too) or BERT
        # WordPiece, told apart by the files it holds.
        from dalle.tokenizers import wordpiece

        return wordpiece.vocabulary(model_path)
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"data.tokenizer_path {model_path!r} does not exist: "
                                f"train it with `dalle tokenizer train --config ...`")
    return seqio.SentencePieceVocabulary(model_path)


def read_info(model_path: str) -> dict[str, Any]:
    path = model_path + ".json"
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def check_normalizer(model_path: str, options: text_lib.NormalizerOptions) -> None:
    """Refuses a tokenizer trained on differently normalized text (e.g. cased vs lowercased captions)."""
    trained = read_info(model_path).get("normalizer")
    if not trained:
        return
    now = {"lowercase": options.lowercase, "ascii_fold": options.ascii_fold, "max_chars": options.max_chars}
    diff = {k: (trained.get(k), v) for k, v in now.items() if trained.get(k) != v}
    if diff:
        raise ValueError(f"tokenizer {model_path!r} was trained with normalizer options {trained}, but the config "
                         f"asks for {now} (differs in {sorted(diff)}); retrain it or change data.lowercase/...")


def train_from_config(data_config: ConfigDict, output: str | None = None, progress: bool = False) -> dict[str, Any]:
    path = output or data_config.tokenizer_path
    if not path:
        raise ValueError("no output path: set data.tokenizer_path or pass --output")
    captions = iter_dataset_captions(data_config, "train", limit=data_config.tokenizer_max_sentences)
    info = train_tokenizer(
        captions, path, data_config.vocab_size,
        model_type=data_config.tokenizer_model_type,
        character_coverage=data_config.character_coverage,
        normalizer=text_lib.options_from_config(data_config),
        max_sentences=data_config.tokenizer_max_sentences,
        progress=progress,
    )
    info["path"] = os.path.abspath(path)
    return info


def main(argv: Sequence[str]) -> int:
    from dalle import config as config_lib

    overrides, rest = config_lib.split_config_args(argv)
    parser = Parser(prog="dalle tokenizer", description="Tokenizer tools.", takes_config=True,
                    examples="dalle tokenizer train --config shapes_tiny")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a sentencepiece model on the dataset's captions")
    train.add_argument("--config", required=True, help="path/to/config.py[:variant]")
    train.add_argument("--output", default=None, help="model path (default: data.tokenizer_path)")
    args = parser.parse_args(rest)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        config = config_lib.load_config(args.config, overrides)
        info = train_from_config(config.data, args.output, progress=True)
    except (config_lib.ConfigError, ValueError, FileNotFoundError) as e:
        print(f"dalle tokenizer: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2, sort_keys=True))
    if info["vocab_size"] != info["requested_vocab_size"]:
        print(f"note: the captions support only {info['vocab_size']} pieces (asked for "
              f"{info['requested_vocab_size']}); set the model's text vocabulary to at least {info['vocab_size']}",
              file=sys.stderr)
    return 0
