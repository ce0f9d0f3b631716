"""The Dask executor: a pass's window tasks on a dask.distributed cluster (runtime/executor.py says what a task is).

Tasks are pure: a worker opens the plan's source itself (readers by path, the model through the model
cache, once per worker process), so Dask may re-run any task elsewhere when a worker dies. Rasters, the
model and the feature spill must therefore be readable at the same paths on the workers, e.g. on a
shared file system; a spill is used only on a cluster on this machine (`shares_files`), elsewhere the
score pass recomputes the features. Partial results merge in the same fixed tree as in this process
(runtime.reduction.tree_reduce over the window index, as merge tasks), scores come back in window order, and the
tasks run at this process's BLAS thread count: the outputs are bit-identical to a run here.
"""

import collections
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator

from ..errors import FersError
from ..feedback import Feedback
from ..runtime.executor import Plan, open_source
from ..runtime.reduction import tree_reduce
from ..runtime.threads import blas_threads, blas_threads_set
from .cluster import SchedulerWatch

POLL_SECONDS = 0.25


def _call(task, plan, window, blas):
    """Worker side: one task on the state a worker opens from the plan's source."""
    with blas_threads_set(blas), open_source(plan.source) as state:
        return task(state, plan, window)


def _identity(value):
    return value


def _stage(function):
    return function.__name__.strip("_").replace("_", "-")


class DaskExecutor:
    """Runs the tasks of a pass on the cluster of `client`; results come back here (the only writer).

    threads: BLAS threads per task (and PyTorch threads, where the detector has no setting of its own);
    0 = this process's counts, which keeps the outputs bit-identical to a run here.
    """

    where = ", on the Dask cluster"

    def __init__(self, client, feedback: Feedback = None, threads: int = 0):
        self.client = client
        self.feedback = feedback or Feedback()
        self.threads = int(threads or 0)
        self.blas = blas_threads_for(self.feedback, self.threads)
        self.shares_files = _on_this_machine(client)

    def attach(self, source, state) -> None:
        """Nothing: the workers open their own state from the source."""

    def reduce(self, task: Callable, plan: Plan, windows: list, merge: Callable, progress: Callable):
        """merge(task(window) for window in windows) along the fixed tree, as tasks; the root's value."""
        run = TaskRun(self.client)
        try:
            shared = run.share("plan", plan)
            leaves = [run.submit(_stage(task), _call, task, shared, window, self.blas) for window in windows]
            root = tree_reduce(leaves, lambda left, right: run.submit(_stage(merge), merge, left, right))
            follow(leaves, self.feedback, progress)
            return result(root, self.feedback)
        except BaseException:
            run.cancel()
            raise

    def ordered(self, task: Callable, plan: Plan, windows: Iterable) -> Iterator[tuple]:
        """(window, result) in the order of `windows`, with a bounded number of tasks submitted ahead."""
        run = TaskRun(self.client)
        try:
            shared = run.share("plan", plan)
            yield from in_order(lambda window: run.submit(_stage(task), _call, task, shared, window, self.blas),
                                windows, self.feedback, ahead(self.client))
        except BaseException:
            run.cancel()
            raise

    def fit(self, function: Callable, *args):
        """function(*args) here at the tasks' BLAS thread count (e.g. the eigen-decomposition of a covariance)."""
        with blas_threads_set(self.blas):
            return function(*args)


def _on_this_machine(client):
    """True for a LocalCluster's client: its workers see this machine's files at the same paths."""
    try:
        from distributed import LocalCluster
    except ImportError:
        return False
    return isinstance(getattr(client, "cluster", None), LocalCluster)


class TaskRun:
    """Names a run's tasks (readable keys, e.g. fers-rx-score-<run>-<n>) and cancels them on failure.

    It keeps only weak references: a result the run no longer needs is released at once.
    """

    def __init__(self, client):
        self.client = client
        self.run_id = uuid.uuid4().hex[:10]
        self.futures = []
        self._counter = 0

    def submit(self, stage, function, *args):
        self._counter += 1
        future = self.client.submit(function, *args, key=f"fers-{stage}-{self.run_id}-{self._counter}", pure=False)
        self.futures.append(weakref.ref(future))
        return future

    def share(self, stage, value):
        """A small task holding `value`: sent once to each worker that needs it, recomputable if its worker dies."""
        return self.submit(stage, _identity, value)

    def cancel(self):
        pending = [f for f in (ref() for ref in self.futures) if f is not None and not f.done()]
        if pending:
            self.client.cancel(pending)
        self.futures = []


def _wait(futures, return_when="ALL_COMPLETED"):
    """distributed.wait for a short while (TimeoutError when nothing is done); no default client needed."""
    from distributed import wait

    futures = list(futures)
    with futures[0].client.as_current():
        return wait(futures, timeout=POLL_SECONDS, return_when=return_when)


def result(future, feedback):
    """The future's result, checking for a cancel (and that the scheduler answers) while waiting; task failures
    become FersErrors."""
    watch = SchedulerWatch(future.client)
    while True:
        try:
            _wait([future])
            break
        except TimeoutError:
            feedback.check_cancelled()
            watch.check()
    try:
        return future.result()
    except FersError:
        raise
    except Exception as error:
        raise task_error(error) from None


def task_error(error):
    name = type(error).__name__
    if name == "KilledWorker":
        return FersError(f"A task was running on every Dask worker that died while running it ({error}); the "
                         "usual cause is memory: give the workers more memory or use smaller blocks (MEMORY_MB).")
    return FersError(f"A Dask task failed: {name}: {error}")


def follow(futures, feedback, progress):
    """Wait until every future is done, reporting progress and checking for a cancel; raise the first error.

    Empties the `futures` list, so that finished results are released as soon as their merge is done.
    """
    pending, total = set(futures), len(futures)
    futures.clear()
    for done, remaining in as_they_finish(pending, feedback):
        for future in done:
            if future.status == "error":
                result(future, feedback)
        if progress is not None:
            progress(1 - remaining / total)


def as_they_finish(futures, feedback):
    """Yield (futures just finished, how many are still pending) until all are done, checking for a cancel."""
    pending = set(futures)
    watch = SchedulerWatch(next(iter(pending)).client) if pending else None
    while pending:
        try:
            done, pending = _wait(pending, "FIRST_COMPLETED")
        except TimeoutError:
            feedback.check_cancelled()
            watch.check()
            continue
        watch.progressed()
        yield done, len(pending)


def in_order(submit, items, feedback, ahead_count):
    """Yield (item, result) in the order of `items`, keeping at most `ahead_count` tasks submitted at a time."""
    queue = collections.deque()
    iterator = iter(items)

    def fill():
        while len(queue) < ahead_count:
            item = next(iterator, _END)
            if item is _END:
                return
            queue.append((item, submit(item)))

    try:
        fill()
        while queue:
            item, future = queue.popleft()
            fill()
            value = result(future, feedback)
            future.release()
            yield item, value
    finally:
        for _, future in queue:
            future.cancel()


_END = object()


def blas_threads_for(feedback, threads=0):
    """BLAS threads for the tasks: `threads`, else this process's count (a warning when it cannot be known)."""
    if threads:
        return int(threads)
    threads = blas_threads()
    if threads is None:
        feedback.warning("numpy's BLAS here is not a controllable OpenBLAS, so the workers cannot match its thread "
                         "count: results may differ from a run in this process in the last bits.")
    return threads


def ahead(client):
    return max(4, 2 * sum(client.nthreads().values()))
