"""Deterministic block-wise reductions, shared by the single-process and the Dask paths.

Global statistics are computed as one partial result per block (a fixed block list), then
merged in a fixed pairwise tree over the block index. The tree depends only on the number of
blocks, never on timing or on which worker computed what, so a run split across a cluster
merges exactly the same numbers in exactly the same order as a run in one process, and the
result is bit-identical.
"""

class TreeReducer:
    """Merges items pushed in block order along a fixed pairwise tree.

    Like a binary counter: two subtrees of the same size are merged as soon as both exist
    (the earlier blocks are always the left operand); `result()` then merges the remaining
    subtrees from the right. Memory is O(log n) items. `combine(left, right)` must not modify
    its arguments; it may return a value or, in the Dask path, a future of one.
    """

    def __init__(self, combine):
        self._combine = combine
        self._stack = []  # (number of leaves, value), oldest first
        self.count = 0

    def push(self, item):
        size, value = 1, item
        while self._stack and self._stack[-1][0] == size:
            left_size, left = self._stack.pop()
            value = self._combine(left, value)
            size += left_size
        self._stack.append((size, value))
        self.count += 1

    def result(self):
        """The merge of every pushed item (ValueError when none was pushed)."""
        if not self._stack:
            raise ValueError("TreeReducer.result() needs at least one item")
        stack = list(self._stack)
        _, value = stack.pop()
        while stack:
            _, left = stack.pop()
            value = self._combine(left, value)
        return value


def tree_reduce(items, combine):
    """Merge `items` (in order) with `combine` along the fixed tree of :class:`TreeReducer`."""
    reducer = TreeReducer(combine)
    for item in items:
        reducer.push(item)
    return reducer.result()
