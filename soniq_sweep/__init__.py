"""soniq_sweep -- many training runs over bit budgets, palettes and seeds, on Ray.

``soniq sweep`` (:mod:`.cli`) expands a grid of training configs (:mod:`.grid`), runs
each as an ordinary training run in ``SWEEP_DIR/trials/<id>/`` on a local or remote
Ray instance or one after another here (:mod:`.runner`), and collects
``results.csv``, ``results.json`` and ``frontier.png`` (:mod:`.results`). A re-run of
the same sweep skips finished trials and resumes interrupted ones.

Ray is an optional dependency (``pip install "soniq[sweep]"``), imported only when
trials run on it.
"""

from .grid import GridError, Trial, expand, load_grid_file, trial_of
from .results import collect, write_results
from .runner import SweepError, run_sweep

__all__ = ["GridError", "SweepError", "Trial", "collect", "expand", "load_grid_file",
           "run_sweep", "trial_of", "write_results"]
