"""tf.data input pipelines: shards -> (image, padded label ids) batches."""

from __future__ import annotations

import tensorflow as tf

from captchalab.gen import shards as sh


def input_shape(manifest: dict, downscale: int) -> tuple[int, int, int]:
    """Model input (height, width, channels) for a dataset at `downscale`."""
    return (manifest["image"]["height"] // downscale, manifest["image"]["width"] // downscale, 1)


def make_parser(shape, max_len: int):
    h, w, _ = shape
    spec = {"image/png": tf.io.FixedLenFeature([], tf.string),
            "label/ids": tf.io.VarLenFeature(tf.int64)}

    def parse(raw):
        ex = tf.io.parse_single_example(raw, spec)
        img = tf.io.decode_png(ex["image/png"], channels=1)
        img = tf.image.convert_image_dtype(img, tf.float32)  # [0, 1]
        img = tf.image.resize(img, (h, w), antialias=True)  # no-op cost when sizes match
        ids = tf.cast(tf.sparse.to_dense(ex["label/ids"]), tf.int32)
        ids = tf.pad(ids, [[0, max_len - tf.shape(ids)[0]]])  # 0 = blank/padding
        ids.set_shape([max_len])
        return img, ids

    return parse


def shard_dataset(data_dir: str, manifest: dict, split: str, *, batch_size: int,
                  downscale: int, training: bool, seed: int = 0) -> tf.data.Dataset:
    """Batches of (images [B,H,W,1] float32 in [0,1], labels [B,max_len] int32, 0-padded).

    Training: shards interleaved in parallel in non-deterministic order, shuffled, repeated.
    Evaluation: each record once, last batch kept, in a deterministic order (shards are
    interleaved, so not index order when a split has several shards: read truths from the
    batches, not from the manifest).
    """
    paths = sh.shard_paths(data_dir, manifest, split)
    shape = input_shape(manifest, downscale)
    max_len = manifest["length"][1]
    files = tf.data.Dataset.from_tensor_slices(paths)
    if training:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = files.interleave(tf.data.TFRecordDataset, cycle_length=min(8, len(paths)),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    if training:
        ds = ds.shuffle(4096, seed=seed)
    ds = ds.map(make_parser(shape, max_len), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=not training)
    ds = ds.batch(batch_size, drop_remainder=training)
    return ds.prefetch(tf.data.AUTOTUNE)


def split_labels(data_dir: str, manifest: dict, split: str) -> list[str]:
    """The label strings of a split, in index order."""
    return [r["label/text"] for r in sh.iter_split(data_dir, manifest, split)]

