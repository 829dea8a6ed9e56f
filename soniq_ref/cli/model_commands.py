"""``soniq eval`` and ``soniq info``: a .soniq model's accuracy and its description."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .parser import UsageError
from .train_command import percent


def _dataset_of(args, meta) -> tuple[str, str | None]:
    """--dataset/--data-dir, defaulting to what the model's metadata records."""
    from ..data import DATASET_NAMES

    if args.dataset is not None:
        return args.dataset, args.data_dir
    if meta.dataset is None:
        raise UsageError(f"argument --dataset: {args.model_file} does not record what it was "
                         f"trained on; pass --dataset ({', '.join(DATASET_NAMES)})")
    if meta.dataset not in DATASET_NAMES:
        raise UsageError(f"argument --dataset: {args.model_file} was trained on "
                         f"{meta.dataset!r}, which soniq cannot load by name; pass --dataset "
                         f"({', '.join(DATASET_NAMES)})")
    return meta.dataset, args.data_dir if args.data_dir is not None else meta.data_dir


def run_eval(args) -> None:
    """Accuracy of the model on the test split (``--json``: exact, with the sample count)."""
    from ..data import load_dataset
    from ..fileformat import load
    from ..train.metadata import read_metadata
    from ..train.trainer import accuracy

    model = load(args.model_file)
    name, data_dir = _dataset_of(args, read_metadata(model))
    data = load_dataset(name, data_dir)
    if data.input_shape != model.input_shape:
        raise ValueError(f"dataset {name} has images {list(data.input_shape)} but the "
                         f"model expects {list(model.input_shape)}")
    logits = model.logits(data.x_test, backend=args.backend)
    acc = accuracy(logits.argmax(axis=1), data.y_test)
    if args.json:
        print(json.dumps({"test_accuracy": acc, "dataset": name,
                          "backend": args.backend, "samples": int(len(data.y_test)),
                          "logits_sha256": hashlib.sha256(
                              np.ascontiguousarray(logits, "<f4").tobytes()).hexdigest()}))
    else:
        print(f"test accuracy {percent(acc)} ({len(data.y_test)} images, {name}, "
              f"backend {args.backend})")


def run_info(args) -> None:
    """The model's stages, bits, size and compression (``--json``: the same as JSON)."""
    from ..fileformat import load
    from ..train.outputs import compression

    model = load(args.model_file)
    size = Path(args.model_file).stat().st_size
    info = {"file": str(args.model_file), "bytes": size, "input_shape": list(model.input_shape),
            "n_classes": model.n_classes, "float32_bytes": model.float32_bytes(),
            "mean_weight_bits": model.mean_weight_bits(),
            **compression(model.float32_bytes(), size, model.mean_weight_bits()),
            "stages": model.describe(), "metadata": model.metadata}
    if args.json:
        print(json.dumps(info, indent=2))
        return
    trained = model.metadata.get("dataset")
    print(f"{args.model_file}: {size} bytes, input {list(model.input_shape)}, "
          f"{model.n_classes} classes" + (f", trained on {trained}" if trained else ""))
    width = max([8] + [len(row["kind"]) for row in info["stages"]])
    print(f"{'#':>2}  {'layer':<{width}} {'output':<14} {'weights':<16} weight bits "
          f"(bits:channels)   input bits (bits:channels)")
    for n, (stage, row) in enumerate(zip(model.stages, info["stages"])):
        lead = f"{n:>2}  {row['kind']:<{width}} {str(row['output_shape']):<14}"
        for line in stage.summary().split("\n"):     # a block: one line per inner layer
            print(f"{lead}{line}".rstrip())
            lead = " " * len(lead)
    print(f"float32 weights and biases {info['float32_bytes']} bytes; "
          f"compression {info['compression_vs_fp32']:.2f}x (file), "
          f"{info['weight_compression']:.2f}x (weights, {info['mean_weight_bits']:.3f} "
          f"mean bits)")
