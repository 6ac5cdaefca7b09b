"""Starting steps in dependency order: each once all it depends on are done, a few at a time.

``run_in_order`` walks the graph with ``graphlib.TopologicalSorter``. It knows nothing of what a
step does: the runner says, for each step that becomes ready, whether it is settled without
running (cached, not selected, or skipped because a dependency did not succeed) and how to start
one. Steps ready at the same time start in file order.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, wait
from graphlib import TopologicalSorter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Future


def run_in_order(graph: dict[str, set[str]], order: list[str], max_parallel: int, *,
                 settle: Callable[[str], bool], start: Callable[[str], Future[None]]) -> None:
    """Start each step of ``graph`` (step -> the steps it depends on) once all of those are done.

    ``settle(step)`` returns True when the step is done without running; otherwise ``start(step)``
    runs it, with at most ``max_parallel`` running at once. Steps ready together start in ``order``.
    Returns when every step is done; raises what a started step's future raises.
    """
    index = {name: position for position, name in enumerate(order)}
    sorter: TopologicalSorter[str] = TopologicalSorter(graph)
    sorter.prepare()
    ready: list[str] = []
    running: dict[Future[None], str] = {}
    while True:
        settled = False
        for name in sorted(sorter.get_ready(), key=index.__getitem__):
            if settle(name):
                sorter.done(name)
                settled = True
            else:
                ready.append(name)
        while ready and len(running) < max_parallel:
            name = ready.pop(0)
            running[start(name)] = name
        if settled:
            continue  # their dependents may be ready now
        if not running:
            return
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            name = running.pop(future)
            future.result()
            sorter.done(name)
