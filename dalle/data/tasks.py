"""seqio Tasks, Mixtures and feature converters of dalle.

Registered by `register_tasks(data_config)` (names from `task_names`, default base `dalle_<source>`):
  <base>        pre-encoded data (`dalle encode` output in data.encoded_dir), for training: normalized captions,
                tokenized with the sentencepiece model, truncated to max_text_length (EOS kept last), blanked
                with probability data.blank_caption_prob (classifier-free guidance, seeded), image tokens.
  <base>_eval   the same without blanking (validation / evaluation).
  <base>_mix    a Mixture of <base> (rate 1) and the extra encoded datasets of data.mixture ("dir:rate").
  <base>_raw    tfds sources (shapes and the real-data builders): tokenized captions + uint8 images, for models
                that need pixels (VQGAN, CLIP, evaluation).

Features: "inputs" (text, SentencePieceVocabulary, EOS appended) and "targets" (image tokens,
PassThroughVocabulary of the codebook). Feature converters turn them into the model batch
{"text_tokens": int32 [B, max_text_length], pad 0; "image_tokens": int32 [B, image_length]}, for both model kinds.
The decoder-only converter emits the same two features (the decoder-only model concatenates caption and image
tokens itself); no packing, since every example has the same image length.

Determinism: sources read files in a seed-derived order, random preprocessing draws from seqio's per-example
seeds, and the shuffle buffer is seeded, so `get_dataset(..., seed=s, shard_info=...)` is a fixed sequence.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf
from ml_collections import ConfigDict

from dalle import paths
from dalle.data import encode as encode_lib
from dalle.data import text as text_lib
from dalle.tokenizers import sentencepiece as tokenizer_lib

TEXT, IMAGE = "inputs", "targets"
MODEL_FEATURES = ("text_tokens", "image_tokens")


# --------------------------------------------------------------------------------------------------------------
# Data sources
# --------------------------------------------------------------------------------------------------------------
def _shuffled(items: Sequence[str], seed: int | None) -> list[str]:
    items = list(items)
    if seed is not None:
        np.random.default_rng(seed).shuffle(items)
    return items


class EncodedDataSource(seqio.DataSource):
    """Shards written by `dalle encode`. Hosts get equal numbers of examples (so they run equally many batches
    per epoch): by whole files when the files divide evenly among the hosts, else by example (every host reads
    all files, in the same seeded order, and keeps every num_shards-th example)."""

    def __init__(self, encoded_dir: str):
        self.encoded_dir = paths.absolute(encoded_dir)
        self.info = encode_lib.read_info(self.encoded_dir)
        if not self.info.get("image_length"):
            raise ValueError(f"{self.encoded_dir}/{encode_lib.INFO_FILE} has no image_length: was it finished?")
        counts = {s: v["count"] for s, v in self.info["splits"].items()}
        super().__init__(splits=list(self.info["splits"]), num_input_examples=counts, caching_permitted=False)

    @property
    def image_length(self) -> int:
        return int(self.info["image_length"])

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True  # get_dataset shards itself, by file or by example

    def list_shards(self, split: str) -> Sequence[str]:
        return encode_lib.split_files(self.encoded_dir, split, self.info)

    def _balanced_by_file(self, split: str, num_shards: int) -> bool:
        counts = self.info["splits"][split].get("shard_counts") or []
        if not counts or len(counts) % num_shards:
            return False
        per_host = {sum(counts[i::num_shards]) for i in range(num_shards)}
        return len(per_host) == 1

    def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                    shard_info: seqio.ShardInfo | None = None, *, sequence_length=None, use_cached=False,
                    num_epochs=1) -> tf.data.Dataset:
        files = list(self.list_shards(split))
        by_example = False
        if shard_info is not None and shard_info.num_shards > 1:
            if self._balanced_by_file(split, shard_info.num_shards):
                files = files[shard_info.index::shard_info.num_shards]
            else:
                by_example = True
        if shuffle:
            files = _shuffled(files, seed)
        ds = encode_lib.dataset_from_files(files, self.info["format"], self.image_length)
        if by_example:
            ds = ds.shard(shard_info.num_shards, shard_info.index)
        return ds


class TfdsBuilderSource(seqio.DataSource):
    """A prepared tfds builder instance (the shapes and real-data builders are configured per config, so they
    cannot be named by a registry string as seqio.TfdsDataSource needs)."""

    def __init__(self, builder):
        self.builder = builder
        counts = {name: s.num_examples for name, s in builder.info.splits.items()}
        super().__init__(splits=list(counts), num_input_examples=counts, caching_permitted=False)

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return False

    def list_shards(self, split: str) -> Sequence[str]:
        return [str(f) for f in self.builder.info.splits[split].filenames]

    def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                    shard_info: seqio.ShardInfo | None = None, *, sequence_length=None, use_cached=False,
                    num_epochs=1) -> tf.data.Dataset:
        import tensorflow_datasets as tfds

        ctx = None
        if shard_info is not None and shard_info.num_shards > 1:
            ctx = tf.distribute.InputContext(num_input_pipelines=shard_info.num_shards,
                                             input_pipeline_id=shard_info.index)
        read_config = tfds.ReadConfig(shuffle_seed=seed, input_context=ctx, interleave_cycle_length=16,
                                      enable_ordering_guard=False)
        ds = self.builder.as_dataset(split=split, shuffle_files=shuffle, read_config=read_config)
        return ds.map(lambda ex: {"caption": ex["caption"], "image": ex["image"]})


# --------------------------------------------------------------------------------------------------------------
# Preprocessors
# --------------------------------------------------------------------------------------------------------------
def caption_to_inputs(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Keeps the raw caption (for debugging/eval) and makes a copy the text feature is built from."""
    return ds.map(lambda ex: {**ex, TEXT: ex["caption"]}, num_parallel_calls=tf.data.AUTOTUNE)


def make_normalizer(options: text_lib.NormalizerOptions):
    """dalle.data.text.normalize_caption inside tf.data (a py_function: the Python normalizer is the reference)."""

    def _py(s: tf.Tensor) -> bytes:
        return text_lib.normalize_caption(s.numpy(), options).encode("utf-8")

    def normalize(ds: tf.data.Dataset) -> tf.data.Dataset:
        def one(ex):
            text = tf.py_function(_py, [ex[TEXT]], tf.string)
            text.set_shape([])
            return {**ex, TEXT: text}

        return ds.map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    return normalize


def make_blanker(prob: float):
    """Empties the caption with probability `prob`, from seqio's per-example seed (deterministic for a seed)."""

    @seqio.map_over_dataset(num_seeds=1)
    def blank(ex, seed):
        drop = tf.random.stateless_uniform([], seed=seed) < prob
        return {**ex, TEXT: tf.where(drop, tf.constant(b"", tf.string), ex[TEXT])}

    return blank


@dataclasses.dataclass(frozen=True)
class CaptionNoise:
    """Training-only caption noise (data.caption_*): word dropout, one made-up word inserted, a neighbour swap."""

    word_dropout: float = 0.0
    unknown_word_prob: float = 0.0
    swap_prob: float = 0.0

    @classmethod
    def from_config(cls, data_config: Any) -> "CaptionNoise":
        return cls(float(data_config.get("caption_word_dropout", 0.0)),
                   float(data_config.get("caption_unknown_word_prob", 0.0)),
                   float(data_config.get("caption_swap_prob", 0.0)))

    @property
    def active(self) -> bool:
        return self.word_dropout > 0 or self.unknown_word_prob > 0 or self.swap_prob > 0


def make_caption_noiser(noise: CaptionNoise):
    """Perturbs each caption's words from seqio's per-example seeds (deterministic for a seed, so resumption stays
    exact). Empty (blanked) captions stay empty. The made-up word is 5 random letters: unknown to any word-level
    vocabulary, so the model learns to read past words it does not know."""

    @seqio.map_over_dataset(num_seeds=4)
    def noisy(ex, seeds):
        text = ex[TEXT]
        words = tf.strings.split(text)
        if noise.word_dropout > 0:
            keep = tf.random.stateless_uniform(tf.shape(words), seed=seeds[0]) >= noise.word_dropout
            kept = tf.boolean_mask(words, keep)
            words = tf.cond(tf.size(kept) > 0, lambda: kept, lambda: words)
        if noise.swap_prob > 0:
            n = tf.size(words)
            u = tf.random.stateless_uniform([2], seed=seeds[1])
            i = tf.minimum(tf.cast(u[1] * tf.cast(tf.maximum(n - 1, 1), tf.float32), tf.int32), tf.maximum(n - 2, 0))
            order = tf.range(n)
            swapped = tf.tensor_scatter_nd_update(order, [[i], [i + 1]], [i + 1, i])
            words = tf.cond((u[0] < noise.swap_prob) & (n >= 2), lambda: tf.gather(words, swapped), lambda: words)
        if noise.unknown_word_prob > 0:
            n = tf.size(words)
            u = tf.random.stateless_uniform([2], seed=seeds[2])
            letters = tf.random.stateless_uniform([5], seed=seeds[3], minval=97, maxval=123, dtype=tf.int32)
            made_up = tf.strings.unicode_encode(letters, "UTF-8")
            at = tf.minimum(tf.cast(u[1] * tf.cast(n + 1, tf.float32), tf.int32), n)
            inserted = tf.concat([words[:at], [made_up], words[at:]], 0)
            words = tf.cond(u[0] < noise.unknown_word_prob, lambda: inserted, lambda: words)
        joined = tf.strings.reduce_join(words, separator=" ")
        return {**ex, TEXT: tf.where(tf.equal(text, b""), text, joined)}

    return noisy


def image_tokens_to_targets(ds: tf.data.Dataset) -> tf.data.Dataset:
    return ds.map(lambda ex: {**ex, IMAGE: ex["image_tokens"]}, num_parallel_calls=tf.data.AUTOTUNE)


def text_feature(vocab: seqio.Vocabulary) -> seqio.Feature:
    return seqio.Feature(vocab, add_eos=True, dtype=tf.int32, required=True)


def image_feature(codebook_size: int) -> seqio.Feature:
    return seqio.Feature(seqio.PassThroughVocabulary(size=int(codebook_size)), add_eos=False, dtype=tf.int32)


# --------------------------------------------------------------------------------------------------------------
# Feature converters
# --------------------------------------------------------------------------------------------------------------
class DalleEncDecFeatureConverter(seqio.FeatureConverter):
    """inputs/targets -> {text_tokens [max_text_length] (pad 0), image_tokens [image_length]} for DalleBart."""

    TASK_FEATURES = {TEXT: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
                     IMAGE: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)}
    MODEL_FEATURES = {"text_tokens": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
                      "image_tokens": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)}
    PACKING_FEATURE_DTYPES = {}

    def __init__(self, pack: bool = False, **kwargs: Any):
        if pack:
            raise ValueError(f"{type(self).__name__} does not pack: every example has the same image length")
        super().__init__(pack=False, **kwargs)

    def _convert_features(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        text_len, image_len = int(task_feature_lengths[TEXT]), int(task_feature_lengths[IMAGE])

        def convert(ex):
            text = ex[TEXT][:text_len]
            image = ex[IMAGE]
            tf.debugging.assert_equal(tf.size(image), image_len,
                                      message=f"image_tokens length differs from the task length {image_len}")
            text = tf.pad(text, [[0, text_len - tf.size(text)]])
            text.set_shape([text_len])
            image = tf.reshape(image, [image_len])
            return {"text_tokens": text, "image_tokens": image}

        return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Mapping[str, int]:
        return {"text_tokens": task_feature_lengths[TEXT], "image_tokens": task_feature_lengths[IMAGE]}


class DalleDecoderOnlyFeatureConverter(DalleEncDecFeatureConverter):
    """The same batch for the decoder-only (prefix LM) model, which concatenates [text_tokens, image_tokens]
    itself; kept separate so the model kind picks its converter by name and layout changes stay local."""


FEATURE_CONVERTERS = {"encdec": DalleEncDecFeatureConverter, "decoder_only": DalleDecoderOnlyFeatureConverter}


def feature_converter_for(model_kind: str) -> seqio.FeatureConverter:
    """A layout name (`encdec`, `decoder_only`) or a text-to-image model kind (dalle/kinds: its `features`)."""
    from dalle import kinds, registry

    kind = model_kind
    if kind not in FEATURE_CONVERTERS and kind in registry.MODEL_KINDS:
        kind = kinds.get(kind).features
    if kind not in FEATURE_CONVERTERS:
        raise ValueError(f"no feature converter for model kind {model_kind!r} (layouts: {sorted(FEATURE_CONVERTERS)}; "
                         f"model kinds: {registry.MODEL_KINDS.names()})")
    return FEATURE_CONVERTERS[kind]()


# --------------------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TaskNames:
    train: str | None  # task or mixture to train on (None: no encoded data)
    eval: str | None
    raw: str | None  # tokenized captions + images (tfds sources)
    image_length: int | None
    codebook_size: int | None


def _replace_task(name: str, **kwargs: Any) -> seqio.Task:
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    return seqio.TaskRegistry.add(name, **kwargs)


def _text_preprocessors(options: text_lib.NormalizerOptions, blank_prob: float,
                        noise: CaptionNoise | None = None) -> list:
    out = [caption_to_inputs, make_normalizer(options)]
    if noise is not None and noise.active:
        out.append(make_caption_noiser(noise))
    if blank_prob > 0:
        out.append(make_blanker(blank_prob))
    out += [seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim]
    return out


def register_encoded_task(name: str, encoded_dir: str, vocab: seqio.Vocabulary,
                          options: text_lib.NormalizerOptions, blank_caption_prob: float = 0.0,
                          codebook_size: int | None = None, shuffle_buffer: int = 10_000,
                          noise: CaptionNoise | None = None) -> seqio.Task:
    """A task over one `dalle encode` output directory (`noise`: training caption noise; None for eval tasks)."""
    source = EncodedDataSource(encoded_dir)
    codebook = codebook_size or source.info.get("codebook_size")
    if not codebook:
        raise ValueError(f"{encoded_dir}/{encode_lib.INFO_FILE} has no codebook_size")
    return _replace_task(
        name,
        source=source,
        preprocessors=[image_tokens_to_targets] + _text_preprocessors(options, blank_caption_prob, noise),
        output_features={TEXT: text_feature(vocab), IMAGE: image_feature(codebook)},
        shuffle_buffer_size=shuffle_buffer,
    )


def register_raw_task(name: str, builder, vocab: seqio.Vocabulary, options: text_lib.NormalizerOptions) -> seqio.Task:
    """Tokenized captions + uint8 images of a prepared tfds builder."""
    return _replace_task(
        name,
        source=TfdsBuilderSource(builder),
        preprocessors=_text_preprocessors(options, 0.0),
        output_features={TEXT: text_feature(vocab)},
        shuffle_buffer_size=10_000,
    )


def task_names(data_config: ConfigDict) -> tuple[str, str, str, str]:
    base = data_config.get("task_name", "") or f"dalle_{data_config.source}"
    return base, f"{base}_eval", f"{base}_mix", f"{base}_raw"


def register_tasks(data_config: ConfigDict, *, raw: bool | None = None) -> TaskNames:
    """Registers (or re-registers) the tasks the `data` section describes and returns their names.

    Encoded tasks are registered when data.encoded_dir holds a `dalle encode` output; the raw task when the source
    is a tfds dataset and `raw` is not False (None: only if the dataset is built).
    """
    vocab = tokenizer_lib.load_vocabulary(data_config.tokenizer_path, data_config.get("unknown_words", "keep"))
    options = text_lib.options_from_config(data_config)
    tokenizer_lib.check_normalizer(data_config.tokenizer_path, options)
    base, eval_name, mix_name, raw_name = task_names(data_config)
    train = evaluation = raw_task = None
    image_length = codebook = None
    if data_config.encoded_dir and paths.isfile(paths.join(data_config.encoded_dir, encode_lib.INFO_FILE)):
        buf = int(data_config.get("shuffle_buffer", 10_000))
        noise = CaptionNoise.from_config(data_config)
        t = register_encoded_task(base, data_config.encoded_dir, vocab, options, data_config.blank_caption_prob,
                                  shuffle_buffer=buf, noise=noise)
        register_encoded_task(eval_name, data_config.encoded_dir, vocab, options, 0.0, shuffle_buffer=buf)
        image_length = t.source.image_length
        codebook = int(t.output_features[IMAGE].vocabulary.vocab_size)
        train, evaluation = base, eval_name
        if data_config.mixture:
            members = [(base, 1.0)]
            for i, entry in enumerate(data_config.mixture):
                where, _, rate = str(entry).rpartition(":")
                name = f"{base}_mix{i}"
                m = register_encoded_task(name, where, vocab, options, data_config.blank_caption_prob, codebook,
                                          shuffle_buffer=buf, noise=noise)
                if m.source.image_length != image_length:
                    raise ValueError(f"data.mixture entry {entry!r} has image_length {m.source.image_length}, "
                                     f"but {data_config.encoded_dir!r} has {image_length}")
                member_codes = m.source.info.get("codebook_size")
                if member_codes is not None and int(member_codes) > codebook:
                    raise ValueError(f"data.mixture entry {entry!r} holds codes of a {member_codes}-code image "
                                     f"tokenizer, but {data_config.encoded_dir!r} has {codebook} codes")
                members.append((name, float(rate)))
            if mix_name in seqio.MixtureRegistry.names():
                seqio.MixtureRegistry.remove(mix_name)
            seqio.MixtureRegistry.add(mix_name, members)
            train = mix_name
    from dalle.data import sources

    is_tfds = sources.of(data_config).is_tfds  # else the examples exist only as data.encoded_dir
    if not is_tfds and train is None:
        encode_lib.read_info(data_config.encoded_dir)  # raises naming the directory and the command
    if is_tfds and raw is not False:
        from dalle.data import build

        try:
            builder = build.load_builder(data_config)
        except FileNotFoundError:
            if raw:
                raise
            builder = None
        if builder is not None:
            register_raw_task(raw_name, builder, vocab, options)
            raw_task = raw_name
    return TaskNames(train=train, eval=evaluation, raw=raw_task, image_length=image_length, codebook_size=codebook)


def sequence_lengths(data_config: ConfigDict, image_length: int) -> dict[str, int]:
    return {TEXT: int(data_config.max_text_length), IMAGE: int(image_length)}


# --------------------------------------------------------------------------------------------------------------
# Helpers for other parts (generation prompts, tokenizer training on encoded data)
# --------------------------------------------------------------------------------------------------------------
def encode_captions(captions: Sequence[str], vocab: seqio.Vocabulary, max_text_length: int,
                    options: text_lib.NormalizerOptions = text_lib.NormalizerOptions()) -> np.ndarray:
    """int32 [N, max_text_length] exactly as the tasks + converters make them: normalize, tokenize, truncate to
    max_text_length - 1, append EOS, pad with 0. `""` gives the unconditional prompt [EOS, 0, ...]."""
    out = np.zeros((len(captions), max_text_length), np.int32)
    for i, caption in enumerate(captions):
        ids = list(vocab.encode(text_lib.normalize_caption(caption, options)))[: max_text_length - 1]
        ids.append(vocab.eos_id)
        out[i, : len(ids)] = ids
    return out


def fingerprint(data_config: ConfigDict) -> str:
    """Short hash of what determines the token stream (saved with the data position, checked on restore)."""
    keys = ("source", "encoded_dir", "tokenizer_path", "max_text_length", "blank_caption_prob", "lowercase",
            "ascii_fold", "max_caption_chars", "mixture", "shuffle_buffer", "task_name")
    # Caption noise and dropped unknown words count only when on (streams saved before they existed keep their
    # fingerprint).
    noise = [(k, data_config.get(k)) for k in ("caption_word_dropout", "caption_unknown_word_prob",
                                               "caption_swap_prob") if data_config.get(k)]
    if data_config.get("unknown_words", "keep") != "keep":
        noise.append(("unknown_words", data_config.unknown_words))
    blob = repr([(k, data_config.get(k)) for k in keys] + noise)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]
