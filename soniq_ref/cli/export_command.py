"""``soniq export MODEL --onnx OUT``: the model as an ONNX graph of integer operators."""

from __future__ import annotations


def run_export(args) -> None:
    from ..fileformat import load
    from ..onnx_export import save_onnx

    model = load(args.model_file)
    size = save_onnx(model, args.onnx)
    print(f"wrote {args.onnx} ({size} bytes)")
