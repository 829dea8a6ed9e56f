"""``history.csv``: one row per epoch of a run (the EpochRecords), rewritten after each epoch.

Columns: ``phase`` (noise, exact or float), ``epoch`` (from 1 over the whole run),
``loss`` (mean training loss; phase 1 includes the bit-budget term),
``train_accuracy`` (on the training batches) and ``val_accuracy`` (on the validation
set, empty without one) (%), ``mean_weight_bits``, ``mean_act_bits``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, fields
from pathlib import Path

from ..atomic import atomic_write_bytes

FILE_NAME = "history.csv"


def write_history(run_dir, history: list) -> Path:
    """Write every record of ``history`` to ``run_dir/history.csv`` atomically."""
    text = io.StringIO()
    if history:
        writer = csv.DictWriter(text, [f.name for f in fields(history[0])], lineterminator="\n")
        writer.writeheader()
        writer.writerows(asdict(r) for r in history)
    path = Path(run_dir) / FILE_NAME
    atomic_write_bytes(path, text.getvalue().encode("utf-8"))
    return path
