"""`dalle encode`: pre-encodes a tfds dataset's images to VQGAN tokens, once, so training never runs the VQGAN.

    dalle encode --config configs/shapes_encode.py --config.data.vqgan_checkpoint=/ckpt/vqgan \\
        --config.data.encoded_dir=/data/shapes_f4

Output (`data.encoded_dir`), read by the `encoded` seqio tasks (dalle.data.tasks):
  info.json                                   count per split, token grid, codebook size, VQGAN config hash,
                                              skipped examples, images/s
  <split>/<split>-00003-of-00010.tfrecord     tf.train.Example {caption: bytes, image_tokens: int64 [h*w]}
                                              (`.array_record` with data.encoded_format=array_record: the same
                                              serialized Examples, random access)
  <split>/<split>-00003-of-00010.json         per-shard sidecar written after the shard: the resume marker

Work is split in output shards of `data.examples_per_shard` input examples. Shard k of a split goes to process
k % process_count; all processes step through the same rounds so the sharded VQGAN call (a collective over the
mesh) stays in lockstep, padding with blank images when a process has fewer rows. A shard whose sidecar exists
is finished and skipped, so a killed job resumes where it stopped. Raw captions are stored; the tasks normalize.
Examples are skipped (and counted) when their image has the wrong shape or their caption is empty after
normalization, which makes them useless for conditional training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from ml_collections import ConfigDict

from dalle import paths
from dalle.cli.args import Parser

log = logging.getLogger(__name__)

INFO_FILE = "info.json"
# Written before the first shard: which VQGAN this directory's codes come from, so that a resumed job with another
# VQGAN is refused even when the first run died before info.json (written at the end) existed.
ENCODER_FILE = "encoder.json"
EXTENSIONS = {"tfrecord": ".tfrecord", "array_record": ".array_record"}
Encoder = Callable[[np.ndarray], np.ndarray]  # uint8 [B, H, W, 3] -> int32 [B, h, w]


# --------------------------------------------------------------------------------------------------------------
# The encoded format (shared with dalle.data.tasks)
# --------------------------------------------------------------------------------------------------------------
def shard_path(encoded_dir: str, split: str, index: int, num_shards: int, fmt: str) -> str:
    return paths.join(encoded_dir, split, f"{split}-{index:05d}-of-{num_shards:05d}{EXTENSIONS[fmt]}")


def sidecar_path(shard: str) -> str:
    return os.path.splitext(shard)[0] + ".json"  # string operations: URIs too


def serialize_example(caption: str | bytes, tokens: np.ndarray) -> bytes:
    import tensorflow as tf

    if isinstance(caption, str):
        caption = caption.encode("utf-8")
    feature = {
        "caption": tf.train.Feature(bytes_list=tf.train.BytesList(value=[caption])),
        "image_tokens": tf.train.Feature(int64_list=tf.train.Int64List(value=np.asarray(tokens).reshape(-1))),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def read_info(encoded_dir: str) -> dict[str, Any]:
    """info.json of an encoded dataset; raises naming the directory (and the command) when it is missing."""
    path = paths.join(encoded_dir, INFO_FILE)
    if not paths.isfile(path):
        raise FileNotFoundError(f"{encoded_dir!r} is not an encoded dataset ({INFO_FILE} is missing): "
                                f"run `dalle encode --config ...` with data.encoded_dir={encoded_dir!r}")
    return json.loads(paths.read_text(path))


def split_files(encoded_dir: str, split: str, info: dict[str, Any] | None = None) -> list[str]:
    info = info or read_info(encoded_dir)
    if split not in info["splits"]:
        raise ValueError(f"encoded dataset {encoded_dir!r} has no split {split!r} "
                         f"(splits: {sorted(info['splits'])})")
    return [paths.join(encoded_dir, split, name) for name in info["splits"][split]["shards"]]


def dataset_from_files(files: Sequence[str], fmt: str, image_length: int):
    """tf.data of {caption: string [], image_tokens: int32 [image_length]} read from shards in the given order."""
    import tensorflow as tf

    files = list(files)
    if fmt == "tfrecord":
        ds = tf.data.TFRecordDataset(files) if files else tf.data.Dataset.from_tensor_slices(tf.constant([], tf.string))
    elif fmt == "array_record":
        def records() -> Iterator[bytes]:
            from array_record.python.array_record_data_source import ArrayRecordDataSource

            for path in files:  # one source per file keeps the order explicit
                src = ArrayRecordDataSource([path])
                for i in range(len(src)):
                    yield src[i]

        ds = tf.data.Dataset.from_generator(records, output_signature=tf.TensorSpec([], tf.string))
    else:
        raise ValueError(f"unknown encoded format {fmt!r} (known: {sorted(EXTENSIONS)})")
    spec = {"caption": tf.io.FixedLenFeature([], tf.string),
            "image_tokens": tf.io.FixedLenFeature([image_length], tf.int64)}

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        return {"caption": ex["caption"], "image_tokens": tf.cast(ex["image_tokens"], tf.int32)}

    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


# --------------------------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class EncodeResult:
    info: dict[str, Any]
    encoded_images: int  # encoded by this process in this run (finished shards skipped)
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.encoded_images / self.seconds if self.seconds > 0 else 0.0


def config_hash(vqgan_config: Any) -> str:
    """sha1 of the VQGAN's model config: encoded data made with a different VQGAN must not be mixed."""
    d = vqgan_config.to_dict() if hasattr(vqgan_config, "to_dict") else dict(vqgan_config)
    d = d.get("model", d)
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def _write_shard(path: str, fmt: str, records: list[bytes]) -> None:
    """Writes to a temporary name and renames: a killed job never leaves a shard that looks finished."""
    paths.makedirs(paths.dirname(path))
    tmp = path + ".incomplete"
    if fmt == "tfrecord":
        import tensorflow as tf

        with tf.io.TFRecordWriter(tmp) as w:
            for r in records:
                w.write(r)
    else:
        from array_record.python.array_record_module import ArrayRecordWriter

        w = ArrayRecordWriter(tmp, "group_size:1")
        for r in records:
            w.write(r)
        w.close()
    paths.replace(tmp, path)


def _batches(builder, split: str, start: int, stop: int, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Input rows [start, stop) of a tfds split in order, as numpy batches (the last one may be short)."""
    if stop <= start:
        return
    ds = builder.as_dataset(split=f"{split}[{start}:{stop}]", shuffle_files=False)
    ds = ds.map(lambda ex: {"image": ex["image"], "caption": ex["caption"]}).batch(batch_size).prefetch(2)
    yield from ds.as_numpy_iterator()


def run_encode(
    config: ConfigDict,
    encoder: Encoder | None = None,
    *,
    vqgan_config: Any = None,
    codebook_size: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    progress: bool = True,
    max_shards: int = 0,
) -> EncodeResult:
    """Encodes `config.data.encode_splits` of the configured tfds dataset into `config.data.encoded_dir`.

    `encoder` defaults to the VQGAN in `data.vqgan_checkpoint` over the mesh from `config.mesh`, its params laid
    out by the logical rules of the VQGAN's own config, as in its training (tests inject a function; then pass `vqgan_config`/`codebook_size`). `max_shards` > 0 stops after that many shards of this
    process (to test resumption).
    """
    from dalle.data import build
    from dalle.data import text as text_lib

    data = config.data
    if not data.encoded_dir:
        raise ValueError("data.encoded_dir is empty: where should the encoded shards go?")
    if data.encoded_format not in EXTENSIONS:
        raise ValueError(f"data.encoded_format = {data.encoded_format!r} is not one of {sorted(EXTENSIONS)}")
    if process_index is None or process_count is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    local_batch = _local_batch_size(config, process_count)
    if encoder is None:
        from dalle import kinds, sharding

        if not data.vqgan_checkpoint:
            raise ValueError("data.vqgan_checkpoint is empty: which VQGAN should encode the images?")
        mesh = sharding.mesh_from_config(config.mesh) if "mesh" in config else None
        tok = kinds.load_image_tokenizer(data.vqgan_checkpoint, data.get("image_tokenizer", ""), mesh=mesh)
        encoder, vqgan_config, codebook_size = tok.encode, tok.config, tok.codebook_size
    builder = build.load_builder(data)
    size = int(data.image_size)
    options = text_lib.options_from_config(data)
    fmt = data.encoded_format
    out_dir = paths.absolute(data.encoded_dir)
    paths.makedirs(out_dir)
    if process_count > 1:
        import jax

        if jax.process_count() == process_count:  # a live multi-process run (tests simulate processes in one)
            check_shared_dir(out_dir, process_index)
    vq_hash = config_hash(vqgan_config) if vqgan_config is not None else ""
    _check_existing(out_dir, vq_hash, process_index)
    splits = [s for s in data.encode_splits if s in builder.info.splits]
    if not splits:
        raise ValueError(f"none of data.encode_splits {tuple(data.encode_splits)} is in dataset {builder.name!r} "
                         f"(splits: {list(builder.info.splits)})")
    start_time = time.time()
    encoded = 0
    shards_done_here = 0
    token_shape: tuple[int, int] | None = None
    bar = _progress(progress and process_index == 0,
                    sum(builder.info.splits[s].num_examples for s in splits))
    for split in splits:
        n = builder.info.splits[split].num_examples
        per = int(data.examples_per_shard)
        num_shards = max(1, math.ceil(n / per))
        for first in range(0, num_shards, process_count):
            round_shards = list(range(first, min(first + process_count, num_shards)))
            shard_paths = {k: shard_path(out_dir, split, k, num_shards, fmt) for k in round_shards}
            todo = [k for k in round_shards if not paths.exists(sidecar_path(shard_paths[k]))]
            if bar is not None:
                bar.update(sum(min(per, n - k * per) for k in round_shards if k not in todo))
            if not todo:
                continue  # every process sees the same files: the whole round is skipped everywhere
            if max_shards and shards_done_here >= max_shards:
                break
            mine = first + process_index
            do_mine = mine in todo
            lo, hi = (mine * per, min(n, (mine + 1) * per)) if do_mine else (0, 0)
            steps = max(math.ceil((min(n, (k + 1) * per) - k * per) / local_batch) for k in todo)
            it = _batches(builder, split, lo, hi, local_batch)
            records: list[bytes] = []
            skipped: dict[str, int] = {}
            t0 = time.time()
            for _ in range(steps):
                batch = next(it, None)
                if batch is None:  # this process has no rows left in the round: blank images keep the lockstep
                    images = np.zeros((0, size, size, 3), np.uint8)
                    captions: list[bytes] = []
                else:
                    images, captions = batch["image"], list(batch["caption"])
                    if images.shape[1:] != (size, size, 3):
                        raise ValueError(f"dataset {builder.name!r} split {split!r} has images of shape "
                                         f"{images.shape[1:]}, but data.image_size = {size}")
                rows = len(captions)
                if rows < local_batch:  # fixed shapes: one compilation, lockstep across processes
                    images = np.concatenate([images, np.zeros((local_batch - rows,) + images.shape[1:],
                                                              np.uint8)])
                tokens = np.asarray(encoder(images))[:rows]
                if tokens.ndim != 3 or tokens.shape[0] != rows:
                    raise ValueError(f"encoder returned tokens of shape {tokens.shape} for {rows} images; "
                                     "expected [batch, h, w]")
                token_shape = token_shape or (int(tokens.shape[1]), int(tokens.shape[2]))
                for caption, tok in zip(captions, tokens):
                    if not text_lib.normalize_caption(caption, options):
                        skipped["empty_caption"] = skipped.get("empty_caption", 0) + 1
                        continue
                    records.append(serialize_example(caption, tok.astype(np.int64)))
                encoded += rows
                if bar is not None:
                    bar.update(rows * process_count if process_count > 1 else rows)
            if do_mine:
                _write_shard(shard_paths[mine], fmt, records)
                side = {"count": len(records), "skipped": skipped, "input_range": [lo, hi],
                        "token_shape": list(token_shape or ()), "seconds": round(time.time() - t0, 3)}
                paths.write_text_atomic(sidecar_path(shard_paths[mine]), json.dumps(side))
                shards_done_here += 1
        else:
            continue
        break  # max_shards reached
    seconds = time.time() - start_time
    if bar is not None:
        bar.close()
    _barrier(process_count)
    info = _write_info(out_dir, splits, builder, data, vq_hash, codebook_size, fmt, seconds, encoded,
                       process_index, process_count)
    return EncodeResult(info=info, encoded_images=encoded, seconds=seconds)


def _local_batch_size(config: ConfigDict, process_count: int) -> int:
    global_batch = int(config.data.encode_batch_size)
    if global_batch % process_count:
        raise ValueError(f"data.encode_batch_size = {global_batch} is not divisible by the {process_count} processes")
    return global_batch // process_count


def _check_existing(out_dir: str, vq_hash: str, process_index: int = 0) -> None:
    """Refuses to resume into a directory encoded with another VQGAN; claims a new one for this VQGAN."""
    if not vq_hash:
        return
    for name in (ENCODER_FILE, INFO_FILE):
        path = paths.join(out_dir, name)
        if paths.isfile(path):
            old = json.loads(paths.read_text(path)).get("vqgan_config_hash")
            if old and old != vq_hash:
                raise ValueError(f"{out_dir!r} holds codes of a VQGAN with config hash {old} ({name}), this one is "
                                 f"{vq_hash}: use another data.encoded_dir")
    path = paths.join(out_dir, ENCODER_FILE)
    if process_index == 0 and not paths.isfile(path):
        paths.write_text_atomic(path, json.dumps({"vqgan_config_hash": vq_hash}))


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, unit="img", desc="encode", dynamic_ncols=True, mininterval=1.0)


def check_shared_dir(out_dir: str, process_index: int) -> None:
    """Every process must see the same `data.encoded_dir`: which shards are done is read from its files, so hosts
    that each see their own folder would pick different work and wait on each other forever. Process 0 writes a
    random token there; every process reads it back; any miss stops all of them with the same error."""
    from jax.experimental import multihost_utils

    token = np.frombuffer(os.urandom(8), np.uint32) if process_index == 0 else np.zeros(2, np.uint32)
    token = np.asarray(multihost_utils.broadcast_one_to_all(token))
    path = paths.join(out_dir, f".shared-check-{token[0]:08x}{token[1]:08x}")
    if process_index == 0:
        paths.write_text_atomic(path, f"{token[0]:08x}{token[1]:08x}")
    multihost_utils.sync_global_devices("dalle_encode_shared_check_written")
    try:
        seen = paths.read_text(path) == f"{token[0]:08x}{token[1]:08x}"
    except OSError:
        seen = False
    everyone = np.asarray(multihost_utils.process_allgather(np.asarray([seen], np.int32))).reshape(-1)
    multihost_utils.sync_global_devices("dalle_encode_shared_check_read")
    if process_index == 0:
        paths.remove(path)
    if not everyone.all():
        blind = [int(i) for i in np.flatnonzero(everyone == 0)]
        raise ValueError(f"data.encoded_dir = {out_dir!r} is not one folder that every process sees (process(es) "
                         f"{blind} cannot read what process 0 wrote there): dalle encode keeps its per-shard "
                         f"progress in that folder, so give it a shared filesystem path, or run one process")


def _barrier(process_count: int) -> None:
    if process_count > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("dalle_encode_done")


def _write_info(out_dir, splits, builder, data, vq_hash, codebook_size, fmt, seconds, encoded, process_index,
                process_count) -> dict[str, Any]:
    """Merges the per-shard sidecars into info.json (process 0 writes; incomplete splits are marked)."""
    info: dict[str, Any] = {
        "format": fmt, "source": data.source, "tfds_name": builder.name, "image_size": int(data.image_size),
        "vqgan_config_hash": vq_hash, "vqgan_checkpoint": data.vqgan_checkpoint,
        "codebook_size": int(codebook_size) if codebook_size else None, "splits": {},
        "last_run": {"seconds": round(seconds, 3), "images_encoded_by_process_0": encoded,
                     "images_per_second": round(encoded * process_count / seconds, 3) if seconds > 0 else None,
                     "process_count": process_count},
    }
    token_shape = None
    complete = True
    for split in splits:
        n = builder.info.splits[split].num_examples
        num_shards = max(1, math.ceil(n / int(data.examples_per_shard)))
        shards, counts, count, skipped, missing = [], [], 0, {}, 0
        for k in range(num_shards):
            path = shard_path(out_dir, split, k, num_shards, fmt)
            side_path = sidecar_path(path)
            if not paths.isfile(side_path):
                missing += 1
                continue
            side = json.loads(paths.read_text(side_path))
            shards.append(paths.basename(path))
            counts.append(side["count"])
            count += side["count"]
            for reason, c in side["skipped"].items():
                skipped[reason] = skipped.get(reason, 0) + c
            token_shape = token_shape or side.get("token_shape") or None
        complete &= missing == 0
        info["splits"][split] = {"count": count, "input_examples": n, "shards": shards, "shard_counts": counts,
                                 "num_shards": num_shards, "missing_shards": missing,
                                 "skipped": skipped, "skipped_total": sum(skipped.values())}
    info["complete"] = complete
    info["token_shape"] = list(token_shape) if token_shape else None
    info["image_length"] = int(np.prod(token_shape)) if token_shape else None
    if process_index == 0:
        paths.write_text_atomic(paths.join(out_dir, INFO_FILE), json.dumps(info, indent=2, sort_keys=True))
    return info


def main(argv: Sequence[str]) -> int:
    from dalle import config as config_lib

    overrides, rest = config_lib.split_config_args(argv)
    parser = Parser(prog="dalle encode", description="Pre-encode a dataset's images to VQGAN tokens.",
                    takes_config=True)
    parser.add_argument("--config", required=True, help="path/to/config.py[:variant]")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(rest)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        config = config_lib.load_config(args.config, overrides)
        result = run_encode(config, progress=not args.no_progress)
    except (config_lib.ConfigError, ValueError, FileNotFoundError) as e:
        print(f"dalle encode: error: {e}", file=sys.stderr)
        return 2
    info = result.info
    counts = {s: v["count"] for s, v in info["splits"].items()}
    print(json.dumps({"encoded_dir": paths.absolute(config.data.encoded_dir), "counts": counts,
                      "complete": info["complete"], "token_shape": info["token_shape"],
                      "images_encoded_this_run": result.encoded_images,
                      "seconds": round(result.seconds, 2),
                      "images_per_second": round(result.images_per_second, 2)}, indent=2))
    return 0


def iter_encoded_captions(encoded_dir: str, split: str = "train", limit: int = 0) -> Iterator[str]:
    info = read_info(encoded_dir)
    ds = dataset_from_files(split_files(encoded_dir, split, info), info["format"],
                                       int(info["image_length"]))
    ds = ds.map(lambda ex: ex["caption"])
    if limit > 0:
        ds = ds.take(limit)
    for c in ds.as_numpy_iterator():
        yield c.decode("utf-8", errors="replace")
