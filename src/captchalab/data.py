"""Datasets for your own model: a captchalab dataset as the tf.data pipeline the trainer uses."""

from __future__ import annotations


def load(data_dir: str, split: str = "train", *, batch_size: int = 64, shuffle: bool = False,
         seed: int = 0):
    """`split` of the dataset in `data_dir` as a tf.data.Dataset of batches
    (images uint8 RGB [B,H,W,3] at the dataset's size, label ids int32 [B,max_len] padded with
    0; id i is `charset[i-1]`, see `dataset_info.json` "charset").

    shuffle=False: each record once, in a fixed order, the last batch kept (for evaluation).
    shuffle=True: the trainer's training stream: shards interleaved, records shuffled, repeated
    without end, full batches only.
    """
    from captchalab.core.tfimport import import_tensorflow
    from captchalab.gen import shards as sh

    m = sh.read_manifest(data_dir)
    sh.shard_paths(data_dir, m, split)  # refuses an unknown split
    sh.check_shard_files(data_dir, m, split)
    if batch_size < 1:
        from captchalab.core.errors import UsageError
        raise UsageError(f"batch_size: {batch_size}; must be at least 1")
    import_tensorflow()
    from captchalab.train.input import shard_dataset

    return shard_dataset(data_dir, m, split, batch_size=batch_size, training=shuffle, seed=seed)
