"""What a training run shows on stderr while it runs.

First one line on the data and the schedule (:func:`run_header`)::

    digits: 1294 training, 144 validation (the last 10%), 359 test images; epochs 30 + 15, batch 64, lr 0.003

then, on a terminal, one bar over every mini-batch of the run, redrawn in place and
fitted to the terminal's width, labelled with the phase, the epoch, the running
training loss and the last epoch's train/validation accuracy and mean bits::

    phase 1 epoch 3/45   5%|#         | 00:26 left, loss 0.612 | train 88.0% val 87.5% bits w2.54 a4.55

Anywhere else (a file,
a pipe, a CI log): one plain line per epoch and no carriage returns, e.g.::

    phase 1 epoch 3/45: loss 0.512  train acc 85.31%  val acc 84.03%  bits w 2.31 a 4.50  (6.1 s)
"""

from __future__ import annotations

import io
import math
import os
import sys
import time

PHASE_LABELS = {"noise": "phase 1", "exact": "phase 2", "float": "fp32"}
MIN_COLUMNS, FALLBACK_COLUMNS, FALLBACK_ROWS = 20, 100, 24
# the phase and epoch, the share of the run done, the time left, the running loss and
# the last epoch's accuracies and mean bits: about 100 columns
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {remaining} left{postfix}"   # postfix: ", ..."


def _columns(stream) -> int:
    """The terminal's width (0 when it reports none)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return 0


def run_header(config, data) -> str:
    """What a run trains on and how: the split sizes and the schedule."""
    n_val, n = len(data.y_val), len(data.y_train) + len(data.y_val)
    if n_val:
        split = (f"{len(data.y_train)} training, {n_val} validation (the last "
                 f"{100 * n_val / n:.3g}%), {len(data.y_test)} test images")
    else:
        split = (f"{len(data.y_train)} training, {len(data.y_test)} test images, no "
                 f"validation set (val fraction 0: epochs report no validation accuracy)")
    epochs = (f"fp32, epochs {config.epochs_phase1 + config.epochs_phase2}" if config.fp32
              else f"epochs {config.epochs_phase1} + {config.epochs_phase2}")
    return (f"{data.name}: {split}; {epochs}, batch {config.batch_size}, "
            f"lr {config.lr:g}")


def _percent(value: float, digits: int) -> str:
    """``85.00%``; ``n/a`` for NaN (no validation set)."""
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}%"


def epoch_summary(record) -> str:
    """The labelled numbers of one epoch (an EpochRecord)."""
    return (f"loss {record.loss:.3f}  train acc {record.train_accuracy:.2f}%  "
            f"val acc {_percent(record.val_accuracy, 2)}  "
            f"bits w {record.mean_weight_bits:.2f} a {record.mean_act_bits:.2f}")


class Progress:
    """Per-batch bar on a terminal, per-epoch lines elsewhere, nothing when disabled."""

    def __init__(self, enabled: bool, total_epochs: int, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.total_epochs = total_epochs
        self.bar = None
        self.last = ""
        self.started = time.perf_counter()

    def note(self, line: str) -> None:
        """Print one line (before the bar starts), unless disabled."""
        if self.enabled:
            print(line, file=self.stream, flush=True)

    def start(self, total_steps: int, done_steps: int) -> None:
        """Open the bar (terminal only) at ``done_steps`` of ``total_steps`` mini-batches."""
        if not self.enabled or not self.stream.isatty():
            return
        from tqdm import tqdm

        width = {"dynamic_ncols": True} if _columns(self.stream) >= MIN_COLUMNS else \
            {"ncols": FALLBACK_COLUMNS, "nrows": FALLBACK_ROWS}   # a terminal reporting no size
        self.bar = tqdm(total=total_steps, initial=done_steps, unit="batch", leave=True,
                        file=self.stream, bar_format=BAR_FORMAT, **width)

    def batch(self, phase: str, epoch: int, loss: float) -> None:
        """One mini-batch done; ``epoch`` counts from 1 over the whole run."""
        if self.bar is None:
            return
        self.bar.set_description(f"{PHASE_LABELS[phase]} epoch {epoch}/{self.total_epochs}",
                                 refresh=False)
        self.bar.set_postfix_str(f"loss {loss:.3f}{self.last}", refresh=False)
        self.bar.update(1)

    def epoch(self, record) -> None:
        """An epoch ended: remember its accuracies (bar) or print its line (no terminal)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.last = (f" | train {record.train_accuracy:.1f}% val "
                         f"{_percent(record.val_accuracy, 1)} bits w{record.mean_weight_bits:.2f} "
                         f"a{record.mean_act_bits:.2f}")
            return
        seconds = time.perf_counter() - self.started
        print(f"{PHASE_LABELS[record.phase]} epoch {record.epoch}/{self.total_epochs}: "
              f"{epoch_summary(record)}  ({seconds:.1f} s)", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
