"""tf.data input pipelines: shards or a live generator stream -> (image, padded label ids) batches."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from captchalab.charset import Charset
from captchalab.gen import shards as sh


def decode_image(png, hw):
    """PNG bytes -> uint8 RGB [H,W,3]; the model itself converts to grey and downscales."""
    img = tf.io.decode_png(png, channels=3)
    img.set_shape((hw[0], hw[1], 3))
    return img


def make_parser(hw, max_len: int):
    """Serialized tf.train.Example -> (image, label ids padded with 0 = blank to max_len)."""
    spec = {"image/png": tf.io.FixedLenFeature([], tf.string),
            "label/ids": tf.io.VarLenFeature(tf.int64)}

    def parse(raw):
        ex = tf.io.parse_single_example(raw, spec)
        ids = tf.cast(tf.sparse.to_dense(ex["label/ids"]), tf.int32)
        ids = tf.pad(ids, [[0, max_len - tf.shape(ids)[0]]])
        ids.set_shape([max_len])
        return decode_image(ex["image/png"], hw), ids

    return parse


def _finish(ds, batch_size, training):
    return ds.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)


def shard_dataset(data_dir: str, manifest: dict, split: str, *, batch_size: int,
                  training: bool, seed: int = 0, cache: bool = False,
                  shard: tuple[int, int] = (0, 1)) -> tf.data.Dataset:
    """Batches of (images [B,H,W,3] uint8 RGB, labels [B,max_len] int32, 0-padded).

    Training: shards interleaved in parallel in non-deterministic order, shuffled, repeated;
    `cache` decodes the split once into memory first (H*W*3 bytes per image), so epochs
    cost no PNG decoding. Evaluation: each record once, last batch kept, in a
    deterministic order (shards are interleaved, so not index order when a split has several
    shards: read truths from the batches, not from the manifest).
    `shard=(i, n)`: read only files i, i+n, i+2n, … (worker i of n in multi-worker training).
    """
    paths = sh.shard_paths(data_dir, manifest, split)[shard[0]::shard[1]]
    hw = (manifest["image"]["height"], manifest["image"]["width"])
    parse = make_parser(hw, manifest["length"][1])

    def read(files, deterministic):
        ds = files.interleave(tf.data.TFRecordDataset, cycle_length=min(8, len(paths)),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
        return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)

    files = tf.data.Dataset.from_tensor_slices(paths)
    if training and cache:
        # decode the split once into memory (a finite pass; a tf.data .cache() left half-read
        # when training stops made the process take ~15 s to exit)
        images, labels = [], []
        for x, y in read(files, True).batch(1024):
            images.append(x.numpy())
            labels.append(y.numpy())
        ds = tf.data.Dataset.from_tensor_slices((np.concatenate(images), np.concatenate(labels)))
        ds = ds.repeat().shuffle(8192, seed=seed)
    elif training:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True).repeat()
        ds = read(files, False).shuffle(8192, seed=seed)
    else:
        ds = read(files, True)
    return _finish(ds, batch_size, training)


def already_split(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Mark a dataset as this worker's own part: tf.distribute must not shard it again."""
    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(opts)


def stream_dataset(recipe: dict, split: str, *, start: int, batch_size: int, workers: int,
                   training: bool = True, stop: int | None = None) -> tf.data.Dataset:
    """Like shard_dataset, from samples rendered on the fly by `workers` processes.

    Indices start, start+1, … of `split` (endless unless `stop`): every sample is new, and each
    is exactly the one `captchalab gen` with the same recipe would write at that index.
    """
    from captchalab.gen.stream import stream_samples

    charset = Charset.from_json(recipe["charset"])
    max_len = recipe["length"][1]
    w, h = recipe["size"]

    def samples():
        for png, text in stream_samples(recipe, split, start, workers, encoded=True, stop=stop):
            ids = np.zeros(max_len, np.int32)
            ids[:len(text)] = charset.encode(text)
            yield png, ids

    ds = tf.data.Dataset.from_generator(samples, output_signature=(
        tf.TensorSpec((), tf.string), tf.TensorSpec((max_len,), tf.int32)))
    ds = ds.map(lambda png, ids: (decode_image(png, (h, w)), ids),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    return _finish(ds, batch_size, training)


def split_labels(data_dir: str, manifest: dict, split: str) -> list[str]:
    """The label strings of a split, in index order."""
    return [r["label/text"] for r in sh.iter_split(data_dir, manifest, split)]
