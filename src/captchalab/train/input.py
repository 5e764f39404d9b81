"""tf.data input pipelines: shards or a live generator stream -> (image, padded label ids) batches."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from captchalab.core.charset import Charset
from captchalab.gen import shards as sh

# Images decoded in one map call per batch: tf.data's per-element overhead was ~40 % of the
# decode cost (bench/input_speed.py: 5 807 -> 8 584 img/s on 2 cores, in one run).
DECODE_PARALLEL = 16  # PNGs of one batch decoded concurrently (map_fn parallel_iterations)


def decode_images(pngs, hw):
    """PNG bytes [B] -> uint8 RGB [B,H,W,3]; the model itself converts to grey and downscales."""
    def one(png):
        img = tf.io.decode_png(png, channels=3)
        img.set_shape((hw[0], hw[1], 3))
        return img

    return tf.map_fn(one, pngs, fn_output_signature=tf.TensorSpec((hw[0], hw[1], 3), tf.uint8),
                     parallel_iterations=DECODE_PARALLEL)


def pad_labels(ids, max_len: int):
    """Label ids [B, <=max_len] -> [B, max_len] int32, padded with 0 (the blank)."""
    ids = tf.cast(ids, tf.int32)
    ids = tf.pad(ids, [[0, 0], [0, max_len - tf.shape(ids)[1]]])
    ids.set_shape([None, max_len])
    return ids


def make_batch_parser(hw, max_len: int):
    """A batch of serialized tf.train.Example -> (images [B,H,W,3], label ids [B,max_len])."""
    spec = {"image/png": tf.io.FixedLenFeature([], tf.string),
            "label/ids": tf.io.VarLenFeature(tf.int64)}

    def parse(raw):
        ex = tf.io.parse_example(raw, spec)
        return decode_images(ex["image/png"], hw), pad_labels(tf.sparse.to_dense(ex["label/ids"]),
                                                              max_len)

    return parse


def _finish(ds):
    """Prefetch, with tf.data's autotuning model off: AUTOTUNE then means one thread per core.

    With it on, destroying an iterator at random waited 10-13 s for the autotuner's thread
    (after fit() returned; ~50 s at the end of some 10-15 minute runs); measured throughput is
    the same without it."""
    opts = tf.data.Options()
    opts.autotune.enabled = False
    return ds.prefetch(tf.data.AUTOTUNE).with_options(opts)


def _batched(ds, fn, batch_size, training):
    """Batch records, then parse/decode each batch in parallel; prefetch."""
    ds = ds.batch(batch_size, drop_remainder=training)
    return _finish(ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training))


WAV_HEADER = 44  # bytes before the samples in the WAV files captchalab writes (gen.audio)
SILENCE = 128  # 8-bit unsigned PCM zero: the value audio batches are padded with


def parse_audio_record(raw, max_len: int):
    """One serialized audio record -> ({"audio": uint8 PCM [N], "audio_length": N}, ids)."""
    ex = tf.io.parse_single_example(raw, {
        "audio/wav": tf.io.FixedLenFeature([], tf.string),
        "audio/samples": tf.io.FixedLenFeature([], tf.int64),
        "label/ids": tf.io.VarLenFeature(tf.int64)})
    n = tf.cast(ex["audio/samples"], tf.int32)
    pcm = tf.io.decode_raw(tf.strings.substr(ex["audio/wav"], WAV_HEADER, n), tf.uint8)
    ids = tf.cast(tf.sparse.to_dense(ex["label/ids"]), tf.int32)
    ids = tf.pad(ids, [[0, max_len - tf.shape(ids)[0]]])
    ids.set_shape([max_len])
    return {"audio": pcm, "audio_length": n}, ids


BUCKET = 4000  # training batches group clips whose lengths fall in one 0.5 s band (at 8 kHz)


def audio_batches(ds, batch_size: int, training: bool, max_len: int):
    """Parsed audio elements -> batches padded with silence to their longest clip. Training
    batches are drawn from clips of about the same length (0.5 s bands): padded to the batch's
    longest, randomly drawn clips of 4-6 characters are ~25 % silence, computed for nothing."""
    shapes = ({"audio": [None], "audio_length": []}, [max_len])
    pad = ({"audio": tf.constant(SILENCE, tf.uint8), "audio_length": 0}, 0)
    if not training:
        return _finish(ds.padded_batch(batch_size, padded_shapes=shapes, padding_values=pad))
    bounds = list(range(BUCKET, 240 * 8000, BUCKET))  # up to 4 minutes; longer: one band
    return _finish(ds.bucket_by_sequence_length(
        lambda x, _: x["audio_length"], bounds, [batch_size] * (len(bounds) + 1),
        padded_shapes=shapes, padding_values=pad, drop_remainder=True))


def pad_to_band(x, ids):
    """An audio batch padded with silence to the top of its 0.5 s band (a multiple of BUCKET
    samples): an XLA-compiled train step then sees one shape per band, not one per batch (each
    new shape is compiled again, ~9 s on 2 CPU cores). Models read a clip the same however its
    batch was padded."""
    n = tf.shape(x["audio"])[1]
    extra = (BUCKET - n % BUCKET) % BUCKET
    audio = tf.pad(x["audio"], [[0, 0], [0, extra]], constant_values=SILENCE)
    return {"audio": audio, "audio_length": x["audio_length"]}, ids


def rebatch(ds, take: int, batch_size: int):
    """The first `take` elements of a batched dataset, in batches of `batch_size` (audio: padded
    again to each new batch's longest clip)."""
    ds = ds.unbatch().take(take)
    x_spec = ds.element_spec[0]
    if isinstance(x_spec, dict):
        return ds.padded_batch(batch_size, padding_values=(
            {"audio": tf.constant(SILENCE, tf.uint8), "audio_length": 0}, 0))
    return ds.batch(batch_size)


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

    def records(files, deterministic):
        return files.interleave(tf.data.TFRecordDataset, cycle_length=min(8, len(paths)),
                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)

    files = tf.data.Dataset.from_tensor_slices(paths)
    if manifest.get("kind") == "audio":  # records of ~120 KB, parsed one by one
        max_len = manifest["length"][1]
        if training:
            files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True).repeat()
            recs = records(files, False).shuffle(1024, seed=seed)
        else:
            recs = records(files, True)
        ds = recs.map(lambda r: parse_audio_record(r, max_len),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
        return audio_batches(ds, batch_size, training, max_len)
    hw = (manifest["image"]["height"], manifest["image"]["width"])
    parse = make_batch_parser(hw, manifest["length"][1])
    if training and cache:
        # decode the split once into memory (a finite pass; a tf.data .cache() left half-read
        # when training stops made the process take ~15 s to exit)
        images, labels = [], []
        for x, y in _batched(records(files, True), parse, 1024, training=False):
            images.append(x.numpy())
            labels.append(y.numpy())
        ds = tf.data.Dataset.from_tensor_slices((np.concatenate(images), np.concatenate(labels)))
        ds = ds.repeat().shuffle(8192, seed=seed)
        return _finish(ds.batch(batch_size, drop_remainder=True))
    if training:  # records (~9 KB) are shuffled before decoding, not images (29 KB)
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True).repeat()
        return _batched(records(files, False).shuffle(8192, seed=seed), parse, batch_size, True)
    return _batched(records(files, True), parse, batch_size, False)


def adapt(ds: tf.data.Dataset, m: dict, frame: dict) -> tf.data.Dataset:
    """Batches of data `m` as the model of `frame` reads them: label ids re-numbered into the
    model's charset (the data's is a subset), images resized (bilinear) to the model's size.
    Unchanged when the data already matches."""
    have, want = Charset.from_json(m["charset"]), Charset.from_json(frame["charset"])
    remap = have.chars != want.chars
    if "image" not in frame:  # audio: one format, nothing to resize
        size, resize = None, False
    else:
        size = (frame["image"]["height"], frame["image"]["width"])
        resize = size != (m["image"]["height"], m["image"]["width"])
    if not remap and not resize:
        return ds
    table = tf.constant([0] + [want.chars.index(c) + 1 for c in have.chars], tf.int32)

    def fn(images, ids):
        if resize:
            images = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(images, size)), 0, 255),
                             tf.uint8)
        return images, (tf.gather(table, ids) if remap else ids)

    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def mix_batches(ds, other, share: float, batch_size: int, max_len: int, seed: int = 0):
    """Training batches with each sample drawn from `other` with probability `share`, else
    from `ds` (both endless batched datasets in the model's frame); labels padded to
    `max_len`."""
    def samples(d):
        return d.map(lambda x, ids: (x, pad_labels(ids, max_len))).unbatch()

    mixed = tf.data.Dataset.sample_from_datasets([samples(ds), samples(other)],
                                                 weights=[1.0 - share, share], seed=seed)
    return _finish(mixed.batch(batch_size, drop_remainder=True))


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

    charset = Charset.from_json(recipe.charset)
    max_len = recipe.length[1]
    if recipe.kind == "audio":
        def clips():
            for pcm, text in stream_samples(recipe, split, start, workers, stop=stop):
                ids = np.zeros(max_len, np.int32)
                ids[:len(text)] = charset.encode(text)
                yield {"audio": pcm, "audio_length": np.int32(len(pcm))}, ids

        ds = tf.data.Dataset.from_generator(clips, output_signature=(
            {"audio": tf.TensorSpec((None,), tf.uint8), "audio_length": tf.TensorSpec((), tf.int32)},
            tf.TensorSpec((max_len,), tf.int32)))
        return audio_batches(ds, batch_size, training, max_len)
    w, h = recipe.size

    def samples():
        for png, text in stream_samples(recipe, split, start, workers, encoded=True, stop=stop):
            ids = np.zeros(max_len, np.int32)
            ids[:len(text)] = charset.encode(text)
            yield png, ids

    ds = tf.data.Dataset.from_generator(samples, output_signature=(
        tf.TensorSpec((), tf.string), tf.TensorSpec((max_len,), tf.int32)))
    return _batched(ds, lambda pngs, ids: (decode_images(pngs, (h, w)), ids), batch_size,
                    training)


def split_labels(data_dir: str, manifest: dict, split: str) -> list[str]:
    """The label strings of a split, in index order."""
    return [r["label/text"] for r in sh.iter_split(data_dir, manifest, split)]
