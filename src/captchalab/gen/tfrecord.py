"""TFRecord framing and tf.train.Example messages, without importing TensorFlow.

Render workers stay light (TensorFlow costs ~4 s and ~600 MB per process to import), yet the
files are plain TFRecords of tf.train.Example that tf.data reads directly. The Example schema
is declared to protobuf here with the same field numbers as tensorflow/core/example/*.proto.
"""

from __future__ import annotations

import struct

import google_crc32c
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def _build_messages():
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="captchalab/example.proto", package="captchalab.tf", syntax="proto3")

    def message(name, *fields, parent=None):
        m = (parent.nested_type if parent else fdp.message_type).add(name=name)
        for fname, number, ftype, label, type_name, oneof in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
            if oneof is not None:
                f.oneof_index = oneof
        return m

    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    message("BytesList", ("value", 1, F.TYPE_BYTES, rep, None, None))
    message("FloatList", ("value", 1, F.TYPE_FLOAT, rep, None, None))
    message("Int64List", ("value", 1, F.TYPE_INT64, rep, None, None))
    feature = message(
        "Feature",
        ("bytes_list", 1, F.TYPE_MESSAGE, opt, ".captchalab.tf.BytesList", 0),
        ("float_list", 2, F.TYPE_MESSAGE, opt, ".captchalab.tf.FloatList", 0),
        ("int64_list", 3, F.TYPE_MESSAGE, opt, ".captchalab.tf.Int64List", 0))
    feature.oneof_decl.add(name="kind")
    features = message("Features", ("feature", 1, F.TYPE_MESSAGE, rep,
                                    ".captchalab.tf.Features.FeatureEntry", None))
    entry = message("FeatureEntry", ("key", 1, F.TYPE_STRING, opt, None, None),
                    ("value", 2, F.TYPE_MESSAGE, opt, ".captchalab.tf.Feature", None),
                    parent=features)
    entry.options.map_entry = True
    message("Example", ("features", 1, F.TYPE_MESSAGE, opt, ".captchalab.tf.Features", None))

    pool = descriptor_pool.DescriptorPool()  # private: never clashes with TensorFlow's own
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("captchalab.tf.Example"))


Example = _build_messages()


def encode_example(features: dict) -> bytes:
    """dict name -> bytes | str | int | float | list of one kind  ->  serialized tf.train.Example.

    Map keys are serialized in sorted order, so equal dicts give equal bytes.
    """
    ex = Example()
    fmap = ex.features.feature
    for key, value in features.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        f = fmap[key]
        if not values:
            f.int64_list.SetInParent()
        elif isinstance(values[0], str):
            f.bytes_list.value.extend(v.encode() for v in values)
        elif isinstance(values[0], bytes):
            f.bytes_list.value.extend(values)
        elif isinstance(values[0], float):
            f.float_list.value.extend(values)
        else:
            f.int64_list.value.extend(int(v) for v in values)
    return ex.SerializeToString(deterministic=True)


def decode_example(data: bytes) -> dict:
    """Serialized tf.train.Example -> dict name -> list of values (bytes, float or int)."""
    ex = Example()
    ex.ParseFromString(data)
    out = {}
    for key, f in ex.features.feature.items():
        kind = f.WhichOneof("kind")
        out[key] = list(getattr(f, kind).value) if kind else []
    return out


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One TFRecord: length, masked crc32c of the length, payload, masked crc32c of the payload."""
    header = struct.pack("<Q", len(data))
    return b"".join((header, struct.pack("<I", masked_crc(header)), data,
                     struct.pack("<I", masked_crc(data))))


class CorruptRecord(Exception):
    def __init__(self, index: int, offset: int, reason: str):
        super().__init__(f"record {index} (byte {offset}): {reason}")
        self.index, self.offset, self.reason = index, offset, reason


def read_records(f):
    """Yield the payload of each TFRecord in binary file `f`, checking both checksums.

    Raises CorruptRecord naming the record index and byte offset of the first bad record.
    """
    index = offset = 0
    while True:
        header = f.read(12)
        if not header:
            return
        if len(header) < 12:
            raise CorruptRecord(index, offset, "truncated header")
        (length,) = struct.unpack("<Q", header[:8])
        (crc,) = struct.unpack("<I", header[8:])
        if masked_crc(header[:8]) != crc:
            raise CorruptRecord(index, offset, "length checksum mismatch")
        body = f.read(length + 4)
        if len(body) < length + 4:
            raise CorruptRecord(index, offset, f"truncated: {len(body)} of {length + 4} bytes")
        data = body[:length]
        if masked_crc(data) != struct.unpack("<I", body[length:])[0]:
            raise CorruptRecord(index, offset, "data checksum mismatch")
        yield data
        index += 1
        offset += 12 + length + 4
