"""`captchalab export --model RUN --format …`: the trained model for serving runtimes.

Every format takes what the Keras model takes (uint8 RGB [N,H,W,3] at the dataset's size; grey
conversion and downscale are inside) and returns its logits; `captchalab.json` beside it gives
the charset and how to decode them.
"""

from __future__ import annotations

import json
import os
import shutil

from captchalab.core.errors import UsageError
from captchalab.core.runconfig import output_home

FORMATS = {"savedmodel": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}


def _sidecar(rec) -> dict:
    greedy = ("per time step take the argmax, merge repeats, drop id 0 (blank)"
              if rec.kind == "ctc" else "per character position take the argmax")
    if rec.data_kind == "audio":
        inputs = {"audio": {"dtype": "uint8", "shape": [None, None],
                            "what": "8-bit unsigned PCM, mono, 8 kHz (a WAV's samples); pad a "
                                    "batch with 128 (silence)"},
                  "audio_length": {"dtype": "int32", "shape": [None],
                                   "what": "samples in each clip before padding"}}
    else:
        w, h = rec.size
        inputs = {"dtype": "uint8", "shape": [None, h, w, 3], "colour": "RGB"}
    return {"format": "captchalab.export/1", "run": os.path.abspath(rec.run_dir),
            "arch": rec.config["arch"], "kind": rec.kind, "data_kind": rec.data_kind,
            "input": inputs,
            "output": {"name": "logits", "dtype": "float32",
                       "shape": [None, rec.model.output_shape[1], rec.model.output_shape[2]]},
            "charset": rec.charset.chars, "ids": "id i (1..K) is charset[i-1]; 0 is the CTC blank",
            "decoding": greedy}


def export_model(run_dir: str, fmt: str, out: str | None = None, overwrite: bool = False) -> str:
    """Write `fmt` for the run into `out` (default RUN/export/FMT); returns the model's path."""
    from captchalab.core.errors import suggest

    if fmt not in FORMATS:
        raise UsageError(f"format: unknown '{fmt}'{suggest(fmt, FORMATS)} "
                         f"(allowed: {', '.join(FORMATS)})", param="format")
    out = out or os.path.join(output_home(run_dir), "export", fmt)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)) and not overwrite:
        raise UsageError(f"out {out} exists and is not empty; give a new folder or --overwrite",
                         param="out")
    if fmt == "onnx":
        import importlib.util

        if importlib.util.find_spec("tf2onnx") is None:
            raise UsageError("format onnx needs tf2onnx: pip install 'captchalab[onnx]'",
                             param="format")
    from captchalab.eval.predictor import load, read_config

    if fmt == "onnx" and read_config(run_dir).get("data_kind") == "audio":
        raise UsageError("format onnx: audio models compute an STFT, which tf2onnx does not "
                         "convert; export savedmodel or tflite", param="format")
    rec = load(run_dir)
    tmp = out.rstrip("/") + ".tmp-export"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    target = os.path.join(tmp, FORMATS[fmt])
    try:
        {"savedmodel": _savedmodel, "tflite": _tflite, "onnx": _onnx}[fmt](rec, target, tmp)
        with open(os.path.join(tmp, "captchalab.json"), "w") as f:
            json.dump(_sidecar(rec), f, indent=2)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(out):
        shutil.rmtree(out)
    os.replace(tmp, out)
    return os.path.join(out, FORMATS[fmt])


def unrolled(model):
    """The same model with its recurrent layers unrolled over the (fixed) time steps: plain
    ops instead of a while loop over tensor lists, which TFLite's builtin ops cannot run."""
    import keras

    def clone(layer):
        cfg = layer.get_config()
        if isinstance(layer, keras.layers.Bidirectional):
            for side in ("layer", "backward_layer"):
                if cfg.get(side):
                    cfg[side]["config"]["unroll"] = True
        elif isinstance(layer, keras.layers.RNN):
            cfg["unroll"] = True
        return layer.__class__.from_config(cfg)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def _savedmodel(rec, path: str, workdir: str, model=None) -> None:
    (model or rec.model).export(path, format="tf_saved_model", verbose=False)


def _tflite(rec, path: str, workdir: str) -> None:
    import tensorflow as tf

    saved = os.path.join(workdir, "saved_model-for-tflite")
    _savedmodel(rec, saved, workdir, unrolled(rec.model))
    conv = tf.lite.TFLiteConverter.from_saved_model(saved)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex: plain runtimes
    with open(path, "wb") as f:
        f.write(conv.convert())
    shutil.rmtree(saved)


def _onnx(rec, path: str, workdir: str) -> None:
    import tensorflow as tf
    import tf2onnx

    w, h = rec.size
    spec = (tf.TensorSpec([None, h, w, 3], tf.uint8, name="image"),)
    fn = tf.function(lambda x: rec.model(x, training=False))
    tf2onnx.convert.from_function(fn, input_signature=spec, opset=17, output_path=path)


def load_exported(path: str):
    """A callable uint8 [N,H,W,3] (audio: {"audio", "audio_length"}) -> logits for an exported
    model file or folder (for tests and for checking an export against the Keras model)."""
    import numpy as np
    import tensorflow as tf

    if path.endswith(".tflite"):
        from ai_edge_litert.interpreter import Interpreter  # LiteRT: tf.lite's successor

        interp = Interpreter(model_path=path)

        def run_tflite(x):
            if isinstance(x, dict):  # audio: the signature runner takes the inputs by name
                runner = interp.get_signature_runner()
                return next(iter(runner(**x).values()))
            inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
            interp.resize_tensor_input(inp["index"], x.shape)
            interp.allocate_tensors()
            interp.set_tensor(inp["index"], x)
            interp.invoke()
            return interp.get_tensor(out["index"])
        return run_tflite
    if path.endswith(".onnx"):
        import onnxruntime as ort

        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})[0]
    loaded = tf.saved_model.load(path)

    def serve(x):
        if isinstance(x, dict):
            return np.asarray(loaded.serve({k: tf.constant(v) for k, v in x.items()}))
        return np.asarray(loaded.serve(tf.constant(x)))
    return serve
