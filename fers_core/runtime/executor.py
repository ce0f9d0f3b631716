"""Who runs a pass's window tasks: this process, or a Dask cluster (distributed/dask_executor.py).

A detector's orchestration (run_global_rx, run_fers_detection, ...) is written once, as passes over a
fixed window list. Each pass is a task, a pure function ``task(state, plan, window)`` of

- a *plan*: a frozen, picklable description of the pass (paths, settings, fitted statistics), whose
  ``source`` says which files and model the pass reads;
- the *state*: the per-process objects opened from ``plan.source`` (readers, the model, the networks);
- one *window* of the raster.

An executor maps the task over the windows, then either merges the results in the one fixed tree of
TreeReducer over the window index (``reduce``) or hands them back in window order (``ordered``). The
tree and the order depend only on the window list, never on the executor, which is what makes a run
on a cluster bit-identical to a run in this process.
"""

from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from typing import Any, Protocol

from ..feedback import Feedback
from .reduction import TreeReducer


class Plan(Protocol):
    source: Any  # what `open_source(source)` opens in a process (readers, model); one object per run


def open_source(source):
    """The state a task of `source` works with, as a context manager (``source.open()``)."""
    return source.open()


class InProcessExecutor:
    """Runs every task here, one window after another, on state opened once per source and run.

    The orchestration may attach the objects it opened itself (its reader, the caller's model), so
    that a run in this process opens each file once; a source nothing was attached to is opened on
    first use and closed with the executor.
    """

    shares_files = True  # the tasks run beside the orchestration: a temporary file of its is theirs too
    threads = 0  # the tasks run at this process's thread counts
    where = ""  # for the log: where the tasks run (nothing to say in this process)

    def __init__(self, feedback: Feedback = None):
        self.feedback = feedback or Feedback()
        self._states = {}
        self._stack = ExitStack()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._states.clear()
        self._stack.close()

    def attach(self, source, state) -> None:
        """Use `state` (opened by the caller, who closes it) for every task of `source`."""
        self._states[id(source)] = source, state  # by identity: a source need not be hashable

    def state(self, source):
        if id(source) not in self._states:
            self._states[id(source)] = source, self._stack.enter_context(open_source(source))
        return self._states[id(source)][1]

    def reduce(self, task: Callable, plan: Plan, windows: list, merge: Callable, progress: Callable = None):
        """merge(task(window) for window in windows) along the fixed tree of TreeReducer."""
        state = self.state(plan.source)
        reducer = TreeReducer(merge)
        for index, window in enumerate(windows):
            reducer.push(task(state, plan, window))
            if progress is not None:
                progress((index + 1) / len(windows))
        return reducer.result()

    def ordered(self, task: Callable, plan: Plan, windows: Iterable) -> Iterator[tuple]:
        """(window, task(window)) in the order of `windows`, each computed when the caller asks for it."""
        state = self.state(plan.source)
        for window in windows:
            yield window, task(state, plan, window)

    def fit(self, function: Callable, *args):
        """function(*args) here, at the threads the tasks ran with (this process's own)."""
        return function(*args)


def run_executor(executor, feedback, stack: ExitStack):
    """`executor`, or a new InProcessExecutor for one run, closed with the caller's `stack`."""
    return executor if executor is not None else stack.enter_context(InProcessExecutor(feedback))
