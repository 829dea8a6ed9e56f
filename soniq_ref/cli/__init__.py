"""The ``soniq`` command: ``train``, ``eval``, ``info``, ``predict``, ``export``, ``data``,
``sweep``.

User errors (bad arguments, missing or malformed datasets and model files)
print one line ``soniq: error: ...`` to stderr and exit with status 2 (usage)
or 1 (anything else), without a traceback. ``SONIQ_DEBUG=1`` re-raises them.
Ctrl-C exits with 130 and says how to resume; a closed stdout (``soniq ... | head``)
ends the command quietly with 141, as for other tools stopped by SIGPIPE.
``soniq`` alone prints the usage and the commands (status 2). See docs/cli.md.
"""

from __future__ import annotations

import os
import sys

from .parser import UsageError, build_parser

EXIT_USAGE, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 2, 1, 130, 141


def _commands() -> dict:
    from .data_command import run_data
    from .export_command import run_export
    from .model_commands import run_eval, run_info
    from .predict_command import run_predict
    from .train_command import run_train

    return {"train": run_train, "eval": run_eval, "info": run_info, "predict": run_predict,
            "export": run_export, "data": run_data, "sweep": run_sweep}


def run_sweep(args) -> None:
    from soniq_sweep import cli as sweep_cli

    sweep_cli.run(args)


def _way_forward(exc) -> str:
    """What to do next, appended to the one-line error where the fix is clear."""
    from ..data import DatasetError
    from ..fileformat import SoniqFileError
    from ..images import ImageError
    from ..train.checkpoint import CheckpointError

    if isinstance(exc, CheckpointError):
        return "; start the run again without --resume"
    if isinstance(exc, SoniqFileError):
        return "; check the path, or write a new model with 'soniq train'"
    if isinstance(exc, ImageError):
        return "; soniq predict reads PNG, JPEG and .npy files (see docs/cli.md)"
    if isinstance(exc, OSError):
        return "; check the path and its permissions"
    if isinstance(exc, DatasetError) and "download" not in str(exc):   # (those say what to do)
        return ("; --data-dir must hold the mnist IDX files or the cifar10 python batches "
                "(see docs/cli.md), or use --dataset digits, which needs no download")
    return ""


def _describe(exc: Exception) -> str:
    """The problem in words: an OSError names its file and says what went wrong."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"cannot write or read {exc.filename}: {exc.strerror}"
    return str(exc)


def _error(message: str) -> None:
    print(f"soniq: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def _run(argv) -> int:
    from .train_command import Interrupted, interrupted_message

    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        _commands()[args.command](args)
    except SystemExit as exc:            # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    except UsageError as exc:
        _error(exc)
        return EXIT_USAGE
    except Interrupted as exc:
        _error(interrupted_message(exc))
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        if os.environ.get("SONIQ_DEBUG"):
            raise
        _error(f"{_describe(exc)}{_way_forward(exc)}")
        return EXIT_ERROR
    return 0


def main(argv=None) -> int:
    """Entry point of the ``soniq`` console script; returns the exit status."""
    try:
        status = _run(argv)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # The reader went away (``soniq ... | head``): stop quietly, and keep Python from
        # reporting the failed flush of stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
