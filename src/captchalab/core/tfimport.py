"""Import TensorFlow without the C++ start-up chatter it writes straight to file descriptor 2.

Those lines (CUDA probing, oneDNN notices) are printed before TF_CPP_MIN_LOG_LEVEL takes effect,
and would break the rule that a user mistake prints exactly one line on stderr.
"""

from __future__ import annotations

import os
import sys


def import_tensorflow():
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF errors still surface as exceptions
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()  # device discovery logs here, once
        import keras  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tf
