"""What a training run leaves in its output folder, and ``metrics.json``.

``metrics.json`` keys (stable; documented in docs/cli.md): ``test_accuracy``
(%, of the exported deploy model on the test set, measured once at the end; of the
float model for ``--fp32``), ``val_accuracy`` (the same model on the validation set;
``null`` without one), ``train_seconds``, ``mean_weight_bits``, ``mean_act_bits`` (parameter- and
activation-element-weighted, 32 for ``--fp32``), ``model_bytes`` (size of
``model.soniq``; for ``--fp32`` the float32 weights and biases), ``compression_vs_fp32``
(float32 bytes of the same network's weights and biases / ``model_bytes``),
``weight_compression`` (32 / ``mean_weight_bits``: the weights alone, 1 for ``--fp32``),
``epochs_phase1``, ``epochs_phase2``, ``seed``, ``dataset``, ``model``, and what
the model file's metadata records (:mod:`.metadata`): ``input_shape``,
``class_names``, ``weight_palette``, ``act_palette``, ``target_weight_bits``,
``target_act_bits``, ``lr``, ``batch_size``, ``val_fraction``, ``version``, ``threads``
(the BLAS threads training ran on), ``backend``; then the network's shape options
(:data:`SHAPE_KEYS`) for the models that have them: ``depth`` and ``width`` for resnet;
``depth`` (blocks), ``dim``, ``heads``, ``patch``, ``pool`` and ``mlp_activation`` for
vit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .. import fileformat
from ..atomic import atomic_write_bytes
from ..plots import plot_bits, plot_curves
from .float_model import FILE_NAME as FLOAT_FILE, save_float_model
from .metadata import run_metadata
from .trainer import TrainResult

METRIC_KEYS = ("test_accuracy", "val_accuracy", "train_seconds", "mean_weight_bits", "mean_act_bits",
               "model_bytes", "compression_vs_fp32", "epochs_phase1", "epochs_phase2",
               "seed", "dataset", "model", "input_shape", "class_names", "weight_palette",
               "act_palette", "target_weight_bits", "target_act_bits", "lr", "batch_size",
               "val_fraction", "version", "threads", "backend")


def _float_bytes(result: TrainResult) -> int:
    """Bytes of the float32 model: the quantized layers' weights and biases (batch norms
    fold into them), and the LayerNorms, position table and class token of a ViT."""
    from ..layers.layernorm import LayerNorm
    from ..layers.tokens import ClassToken, PositionEmbedding

    kept = sum(p.size for _, l in result.model.named_layers()
               if isinstance(l, (LayerNorm, PositionEmbedding, ClassToken))
               for p in l.params.values())
    return 4 * (kept + sum(l.params["weight"].size + l.params["bias"].size
                           for l in result.model.quant_layers()))


def compression(fp32_bytes: int, model_bytes: int, mean_weight_bits: float) -> dict:
    """What the model gains over float32: ``compression_vs_fp32`` (the file: float32
    bytes of the same network's weights and biases / the model's bytes) and
    ``weight_compression`` (the weights alone: 32 / mean weight bits)."""
    return {"compression_vs_fp32": fp32_bytes / model_bytes,
            "weight_compression": 32.0 / mean_weight_bits}


METRIC_KEYS += ("weight_compression",)      # from :func:`compression`
# the network's shape options, for the models that have them (resnet, vit)
SHAPE_KEYS = ("depth", "width", "dim", "heads", "patch", "pool", "mlp_activation")


def write_run(result: TrainResult, out_dir) -> dict:
    """Write metrics.json, curves.png, and model.soniq and bits.png (fp32: model_fp32.npz)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = result.config
    fp32_bytes = _float_bytes(result)
    if result.deploy is None:
        model_bytes = fp32_bytes
        save_float_model(result.model, out / FLOAT_FILE, run_metadata(result))
    else:
        model_bytes = fileformat.save(result.deploy, out / "model.soniq",
                                      result.deploy.metadata)
        plot_bits(result.deploy, out / "bits.png",
                  (result.mean_weight_bits, result.mean_act_bits))
    plot_curves(result.history, out / "curves.png")
    meta = run_metadata(result)
    values = {"test_accuracy": result.test_accuracy,
              "val_accuracy": None if math.isnan(result.val_accuracy) else result.val_accuracy,
              "train_seconds": round(result.train_seconds, 3),
              "mean_weight_bits": result.mean_weight_bits,
              "mean_act_bits": result.mean_act_bits,
              "model_bytes": model_bytes,
              **compression(fp32_bytes, model_bytes, result.mean_weight_bits),
              "dataset": config.dataset, "version": meta["soniq_version"],
              "input_shape": meta["input_shape"], "class_names": meta["class_names"],
              **meta["training"]}
    metrics = {k: values[k] for k in METRIC_KEYS}
    metrics.update({k: meta["training"][k] for k in SHAPE_KEYS if k in meta["training"]})
    atomic_write_bytes(out / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())
    return metrics
