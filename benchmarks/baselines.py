"""What the cpu benchmarks share: median timing, ONNX Runtime INT8 baselines, tables.

ONNX Runtime models are built in-process with the ``onnx`` helper API:
MatMulInteger and ConvInteger on uint8 activations x int8 weights (int32 out), the
weights stored as initializers so they are prepared once, like our packed weights.
Thread counts are set per session (intra-op threads, no inter-op parallelism).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import tempfile
import time

import numpy as np


CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}


def kernel_parser(description: str):
    """The options gemm.py and conv.py share: --json, --repeats, --threads, --no-check, --clock."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", help="write all measurements to this JSON file")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", help="comma-separated thread counts (default: 1,all)")
    parser.add_argument("--no-check", action="store_true", help="skip the exactness check")
    add_clock_option(parser)
    return parser


def add_clock_option(parser) -> None:
    """``--clock wall|thread`` for the single-threaded rows (see :func:`clock_for`)."""
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="single-threaded rows: wall time or the thread's CPU time "
                             "(multi-threaded rows always use wall time)")


def thread_counts(option) -> list:
    """``--threads`` as a list; by default one thread and all the cores this process may use."""
    if option:
        return [int(t) for t in option.split(",")]
    return sorted({1, len(os.sched_getaffinity(0))})


def clock_for(name: str, threads: int) -> str:
    """``thread`` (CPU time of the calling thread) only makes sense single-threaded: every
    baseline then runs on the calling thread. With more threads it is always wall time."""
    return name if threads == 1 else "wall"


def paired_median_seconds(fns, repeats: int = 7, min_time: float = 0.05,
                          clock: str = "wall") -> list[float]:
    """median_seconds of each of several functions, their samples taken in turn.

    Sample i of every function is taken before sample i + 1 of any, so a burst of load
    from elsewhere on the machine slows the functions being compared alike and their
    ratio stays meaningful.
    """
    now = CLOCKS[clock]
    inners = []
    for fn in fns:
        fn()
        start = now()
        fn()
        inners.append(max(1, int(min_time / max(now() - start, 1e-7))))
    samples = [[] for _ in fns]
    for _ in range(repeats):
        for fn, inner, out in zip(fns, inners, samples):
            start = now()
            for _ in range(inner):
                fn()
            out.append((now() - start) / inner)
    return [statistics.median(s) for s in samples]


def median_seconds(fn, repeats: int = 7, min_time: float = 0.05, clock: str = "wall") -> float:
    """Median over ``repeats`` samples of the seconds per call of ``fn``.

    One warm-up call; each sample runs ``fn`` enough times to last about ``min_time``.
    ``clock``: ``wall`` (elapsed time) or ``thread`` (CPU time of this thread: on a
    machine shared with other work it leaves out the time the thread waited for a core).
    """
    return paired_median_seconds([fn], repeats, min_time, clock)[0]


def numpy_seconds(fn, threads: int, repeats: int, clock: str = "wall") -> float:
    """median_seconds of a NumPy/BLAS call with BLAS limited to ``threads`` threads."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return median_seconds(fn, repeats, clock=clock)
    with threadpool_limits(limits=threads):
        return median_seconds(fn, repeats, clock=clock)


def _session(model, threads: int):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3          # errors only
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # worker threads sleep between runs instead of spinning: samples of ORT and of our
    # kernels are taken in turn, and spinning workers would hold the cores our threads need
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _model(node, inputs, output, initializers):
    from onnx import helper
    graph = helper.make_graph([node], "soniq_baseline", inputs, [output], initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def ort_matmul_integer(a_u8: np.ndarray, w_s8: np.ndarray, threads: int):
    """A callable running ONNX Runtime MatMulInteger: uint8 [M, K] x int8 [K, N] -> int32."""
    from onnx import TensorProto, helper, numpy_helper
    m, k = a_u8.shape
    node = helper.make_node("MatMulInteger", ["a", "w"], ["y"])
    model = _model(node, [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
                   helper.make_tensor_value_info("y", TensorProto.INT32, [m, w_s8.shape[1]]),
                   [numpy_helper.from_array(np.ascontiguousarray(w_s8), "w")])
    session = _session(model, threads)
    feed = {"a": np.ascontiguousarray(a_u8)}
    return lambda: session.run(None, feed)[0]


def fbgemm_linear(a_u8: np.ndarray, w_s8: np.ndarray, threads: int):
    """A callable running PyTorch's fbgemm INT8 linear layer on uint8 [M, K] x int8 [K, N]
    (per-channel qint8 weights, quint8 activations; ``torch.backends.quantized.engine =
    "fbgemm"``), or None without PyTorch. Its output is requantized to quint8 (there is no
    int32 result to compare): time only. Sets PyTorch's intra-op threads to ``threads``."""
    try:
        import torch
    except ImportError:
        return None
    import warnings
    torch.backends.quantized.engine = "fbgemm"
    torch.set_num_threads(threads)
    n = w_s8.shape[1]
    scales = torch.full((n,), 1.0, dtype=torch.float64)
    with warnings.catch_warnings():         # quantized tensors are deprecated, still fbgemm's
        warnings.simplefilter("ignore", UserWarning)
        weight = torch._make_per_channel_quantized_tensor(
            torch.from_numpy(np.ascontiguousarray(w_s8.T)), scales,
            torch.zeros(n, dtype=torch.int64), 0)
        packed = torch.ops.quantized.linear_prepack(weight, None)
    x = torch._make_per_tensor_quantized_tensor(torch.from_numpy(np.ascontiguousarray(a_u8)),
                                                1.0, 0)
    out_scale = float(a_u8.shape[1] * 255 * 128) / 127     # every sum within the output grid

    def run():
        with torch.inference_mode():
            return torch.ops.quantized.linear(x, packed, out_scale, 128)

    return run


def ort_conv_integer(x_u8: np.ndarray, w_s8: np.ndarray, stride: int, padding: int,
                     threads: int):
    """A callable running ONNX Runtime ConvInteger: uint8 NCHW x int8 OIHW -> int32."""
    from onnx import TensorProto, helper, numpy_helper
    node = helper.make_node("ConvInteger", ["x", "w"], ["y"], strides=[stride, stride],
                            pads=[padding] * 4)
    model = _model(node, [helper.make_tensor_value_info("x", TensorProto.UINT8, list(x_u8.shape))],
                   helper.make_tensor_value_info("y", TensorProto.INT32, None),
                   [numpy_helper.from_array(np.ascontiguousarray(w_s8), "w")])
    session = _session(model, threads)
    feed = {"x": np.ascontiguousarray(x_u8)}
    return lambda: session.run(None, feed)[0]


def machine() -> dict:
    """CPU model, core count and library versions, for the record."""
    import onnxruntime
    info = {"python": platform.python_version(), "numpy": np.__version__,
            "onnxruntime": onnxruntime.__version__, "cpus": os.cpu_count()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def markdown_table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str, payload: dict) -> None:
    """Write ``payload`` as JSON atomically (temporary file in the same folder, then rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".bench-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
