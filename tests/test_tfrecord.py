"""Our TFRecord writer is read by TensorFlow itself; our reader catches damage."""

import io

import pytest

from captchalab.gen.tfrecord import (
    CorruptRecord,
    decode_example,
    encode_example,
    frame,
    read_records,
)


def test_tensorflow_reads_our_records(small_dataset):
    import tensorflow as tf

    from captchalab.gen import shards as sh

    m = sh.read_manifest(str(small_dataset))
    files = sh.shard_paths(str(small_dataset), m, "val")
    spec = {"image/png": tf.io.FixedLenFeature([], tf.string),
            "label/text": tf.io.FixedLenFeature([], tf.string),
            "label/ids": tf.io.VarLenFeature(tf.int64),
            "style/rotate": tf.io.FixedLenFeature([], tf.float32),
            "style/bg": tf.io.FixedLenFeature([3], tf.int64)}
    ours = list(sh.iter_split(str(small_dataset), m, "val"))
    n = 0
    for raw, mine in zip(tf.data.TFRecordDataset(files), ours, strict=True):
        ex = tf.io.parse_single_example(raw, spec)
        img = tf.io.decode_png(ex["image/png"], channels=3)
        assert img.shape == (60, 160, 3)
        assert ex["label/text"].numpy().decode() == mine["label/text"]
        assert tf.sparse.to_dense(ex["label/ids"]).numpy().tolist() == mine["label/ids"]
        assert list(ex["style/bg"].numpy()) == mine["style/bg"]
        n += 1
    assert n == m["splits"]["val"]["count"] == 20


def test_example_round_trip_is_deterministic():
    feats = {"b": b"\x00\x01", "s": "héllo", "i": [3, 1, 2], "f": 0.5, "e": []}
    a = encode_example(feats)
    assert a == encode_example(dict(reversed(feats.items())))  # map order does not matter
    d = decode_example(a)
    assert d == {"b": [b"\x00\x01"], "s": ["héllo".encode()], "i": [3, 1, 2], "f": [0.5], "e": []}


def test_reader_names_the_bad_record():
    data = frame(b"first") + frame(b"second") + frame(b"third")
    assert list(read_records(io.BytesIO(data))) == [b"first", b"second", b"third"]
    flipped = bytearray(data)
    flipped[len(frame(b"first")) + 14] ^= 0x01  # inside the payload of record 1
    with pytest.raises(CorruptRecord, match="record 1 .*data checksum"):
        list(read_records(io.BytesIO(bytes(flipped))))
    with pytest.raises(CorruptRecord, match="record 2 .*truncated"):
        list(read_records(io.BytesIO(data[:-3])))
