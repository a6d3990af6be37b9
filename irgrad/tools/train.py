"""`irgrad train FILE.py`: run an example's training loop (the protocol examples follow).

An example is a Python file that defines

    def train(backend="cpu", epochs=..., pipeline="O2", threads=None, seed=0, **options):
        ...                      # trains, prints progress, returns a dict of results

and, optionally, `add_arguments(parser)`, which adds the example's own command-line
options to an `argparse` parser (their `dest` names are passed to `train` as keyword
arguments). Importing the file must not train anything: the training loop runs only
when `train` is called, so the file's module-level traced Functions stay usable as
`FILE.py:NAME` targets of `irgrad dump`, `viz`, `memplan` and `bench`. The file ends with

    if __name__ == "__main__":
        sys.exit(irgrad.tools.train.main(sys.modules[__name__]))

so that `python FILE.py --epochs 3` and `irgrad train FILE.py --epochs 3` are the same.

The common options are `--backend numpy|cpu|cuda`, `--epochs N`, `--pipeline P`,
`--threads T` and `--seed S`; an option left out is not passed, so `train`'s own default
applies. A backend that cannot run here (no GPU, no CUDA toolkit, no LLVM) falls back to
the reference interpreter (`numpy`) with a note saying so: see `resolve_backend`.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys

import numpy as np

from .. import api
from ..backends import backend_names, get_backend
from ..errors import IrgradError
from ..frontend.function import trace
from ..frontend.specs import f32


def int_at_least(least: int):
    """An argparse type: an integer >= least."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if n < least:
            words = "a positive integer" if least == 1 else f"an integer >= {least}"
            raise argparse.ArgumentTypeError(f"expected {words}, got {n}")
        return n
    parse.__name__ = "positive_int" if least == 1 else f"int_at_least_{least}"
    return parse


positive_int = int_at_least(1)


def require(module: str, extra: str, what: str = "this example"):
    """Import an optional package, or raise one readable IrgradError saying how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        package = {"sklearn": "scikit-learn"}.get(top, top)
        raise IrgradError(f"{what} needs the Python package {package}, which is not installed: "
                          f"pip install 'irgrad[{extra}]' (or pip install {package})") from None


class _NoBar:
    def __init__(self, iterable):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def close(self) -> None:
        pass


def progress(iterable, **tqdm_options):
    """A tqdm progress bar over `iterable` when tqdm (the examples extra) is installed;
    without it, the iterable itself (training runs the same, with no bar)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar(iterable)
    return tqdm(iterable, **tqdm_options)


def train_epochs(step, test_accuracy, x_train, y_train, epochs: int, batch: int, seed: int,
                 quiet: bool = False):
    """The examples' training loop: `epochs` passes over shuffled batches of `batch` with the
    compiled `step`, printing each epoch's mean loss and `test_accuracy()`; returns
    (mean losses, accuracies, training seconds)."""
    import time
    rng = np.random.default_rng(seed)
    n_batches = len(x_train) // batch
    losses, accuracy, seconds = [], [], 0.0
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        order = rng.permutation(len(x_train))
        total = 0.0
        bar = progress(range(n_batches), desc=f"epoch {epoch:3d}/{epochs}", leave=False,
                       disable=True if quiet else None, unit="batch", file=sys.stdout)
        for b in bar:
            idx = order[b * batch:(b + 1) * batch]
            total += step(x_train[idx], y_train[idx])
        bar.close()
        acc = test_accuracy()
        seconds += time.perf_counter() - t0
        losses.append(total / n_batches)
        accuracy.append(acc)
        print(f"epoch {epoch:3d}/{epochs}  loss {losses[-1]:.4f}  test accuracy {acc:6.2%}")
    return losses, accuracy, seconds


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every example takes; each defaults to None (= the example's default)."""
    g = parser.add_argument_group("training options (every example)")
    g.add_argument("--backend", choices=backend_names(), default=None,
                   help="where the compiled step runs (default: the example's, usually cpu)")
    g.add_argument("--epochs", type=positive_int, default=None, metavar="N",
                   help="passes over the data (or the example's unit of training)")
    g.add_argument("--pipeline", "-p", default=None, metavar="P",
                   help="pass pipeline for the compiled step (default O2)")
    g.add_argument("--threads", type=positive_int, default=None, metavar="T",
                   help="threads for the native backends (default: every core)")
    g.add_argument("--seed", type=int, default=None, metavar="S",
                   help="seed of the initialization and of the batch order")


def example_parser(module, prog: str | None = None) -> argparse.ArgumentParser:
    """The full option parser of an example module: common options + its own."""
    doc = (module.__doc__ or "").strip()
    parser = argparse.ArgumentParser(
        prog=prog, description=doc.splitlines()[0] if doc else None,
        epilog="\n".join(doc.splitlines()[1:]).strip() or None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    add = getattr(module, "add_arguments", None)
    if add is not None:
        add(parser.add_argument_group("options of this example"))
    return parser


def check_example(module, path: str = "the example"):
    """The example's `train` function, or a readable error if it does not follow the protocol."""
    train = getattr(module, "train", None)
    if train is None or not callable(train):
        raise IrgradError(f"{path} defines no train(...) function; `irgrad train` runs examples "
                          f"that define train(backend=..., epochs=..., pipeline=..., threads=..., "
                          f"seed=..., **options) (see irgrad/tools/train.py)")
    return train


def run(module, argv=(), defaults: dict | None = None, prog: str | None = None,
        path: str | None = None):
    """Parse `argv` with the example's parser and call its `train`; returns what train returns.

    `defaults` (common options already parsed by `irgrad train`) apply unless `argv`
    sets them again.
    """
    train = check_example(module, path or getattr(module, "__file__", "the example"))
    parser = example_parser(module, prog)
    if defaults:
        parser.set_defaults(**{k: v for k, v in defaults.items() if v is not None})
    args = parser.parse_args(list(argv))
    kwargs = {k: v for k, v in vars(args).items() if v is not None}
    accepted = inspect.signature(train).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        ignored = sorted(k for k in kwargs if k not in accepted)
        for k in ignored:
            print(f"note: {path or 'the example'} ignores --{k.replace('_', '-')}", file=sys.stderr)
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    return train(**kwargs)


def main(module, argv=None) -> int:
    """`if __name__ == "__main__": sys.exit(irgrad.tools.train.main(sys.modules[__name__]))`."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        run(module, argv, prog=None)
    except IrgradError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `python example.py | head`
        sys.stdout = None
        return 0
    return 0


_backend_ok: dict[str, str] = {}


def resolve_backend(backend: str, threads: int | None = None, log=None) -> str:
    """`backend` if it can compile and run a tiny function here, else "numpy" (with a note).

    The check is done once per backend and process; `numpy` (the reference interpreter)
    always works.
    """
    get_backend(backend)  # an unknown name: one clear error
    if backend == "numpy":
        return backend
    if backend not in _backend_ok:
        try:
            probe = trace(lambda x: x * 2.0 + 1.0, f32[4], name="probe")
            opts = {"threads": threads} if threads else {}
            out = api.compile(probe, backend=backend, **opts)(np.ones(4, np.float32))
            if not np.allclose(out, 3.0):
                raise RuntimeError("the probe function computed a wrong result")
            _backend_ok[backend] = backend
        except Exception as e:  # noqa: BLE001 - any failure means: not usable here
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            msg = (f"note: the {backend} backend is not available here ({reason}); "
                   f"running on the reference interpreter (numpy) instead, which is much slower")
            (log or (lambda m: print(m, file=sys.stderr)))(msg)
            _backend_ok[backend] = "numpy"
    return _backend_ok[backend]


def backend_options(backend: str, threads: int | None) -> dict:
    """Keyword options for ig.compile / ig.compile_step on `backend`."""
    return {"threads": threads} if backend != "numpy" and threads else {}
