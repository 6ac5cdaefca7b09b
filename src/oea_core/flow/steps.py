"""Step kinds: each ``kind:`` of a flow step is one registered ``StepKind`` class that checks and runs it.

A kind has a ``name`` (the YAML ``kind:``) and a ``target_key`` (the key naming what it runs). It
owns two things:

- ``validate(check, where, raw, folder)``: when the flow is loaded, check the step's own keys
  (problems go to ``check`` with their lines) and return its target, or None when it has none;
- ``run(run, step, deadline)``: one attempt of the step in a run (a ``context.StepRun``, which the
  runner's ``FlowRun`` is), to finish before ``deadline`` (``time.monotonic()``); returns the rows
  it wrote, or None.

Python and notebook steps run in a worker process (``WorkerStepKind``): ``payload`` builds, in the
runner, the plain values the worker needs; ``work`` runs in the worker (see ``worker.py``).
Register a new kind with ``@step_kinds.register``; ``step_kinds.get`` names the registered kinds
when it does not know one.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from ..delta import delta_store
from ..errors import FlowError, NotebookRunError
from ..notebook_run import check_parameters, execute_notebook, notebook_parameters
from ..registry import Registry
from .datasources import jdbc_options

if TYPE_CHECKING:
    from collections.abc import Callable

    from .context import StepRun
    from .model import Step
    from .problems import Checker, Node

log = logging.getLogger("oea")
Kind = TypeVar("Kind", bound="type[StepKind]")


class StepKind(ABC):
    """How one kind of step is checked and run."""

    name: ClassVar[str]
    target_key: ClassVar[str]

    @abstractmethod
    def validate(self, check: Checker, where: str, raw: Node, folder: str) -> str | None:
        """Check the step's own keys in ``raw``; returns its target (None when it has none)."""

    @abstractmethod
    def run(self, run: StepRun, step: Step, deadline: float) -> int | None:
        """Run one attempt of ``step``; returns the rows it wrote (None when it does not say)."""

    def target(self, check: Checker, where: str, raw: Node) -> str | None:
        """The value of ``target_key``; a problem when it is missing or not text."""
        target = raw.get(self.target_key)
        if not isinstance(target, str) or not target:
            check.add(where, raw.line, f"a {self.name} step needs '{self.target_key}'")
            return None
        return target

    def target_file(self, check: Checker, where: str, raw: Node, folder: str) -> str | None:
        """The target as a file beside the flow; a problem when it is missing or does not exist."""
        target = self.target(check, where, raw)
        return None if target is None else check.file(where, raw.line_of(self.target_key), folder, target)


@dataclass(frozen=True)
class StepOutcome:
    """What a worker step gives back: its rows and, optionally, one line saying what it did."""

    rows: int | None
    note: str | None = None


class WorkerStepKind(StepKind):
    """A kind whose steps run in a worker process, which a timeout kills with all it started."""

    def run(self, run: StepRun, step: Step, deadline: float) -> int | None:
        return run.in_worker(step, {"kind": self.name, **self.payload(run, step)}, deadline)

    @abstractmethod
    def payload(self, run: StepRun, step: Step) -> dict[str, Any]:
        """What the worker needs to run ``step`` (plain values: it is pickled), built in the runner."""

    @abstractmethod
    def work(self, payload: dict[str, Any]) -> int | StepOutcome | None:
        """Run the step in the worker process; returns its rows (or a :class:`StepOutcome`)."""


class StepKinds(Registry[StepKind]):
    """The step kinds by name, in the order they were registered; ``register`` takes a kind's class
    (usable as a decorator) and keeps one instance of it."""

    def __init__(self) -> None:
        super().__init__("step kind", ordered=True, duplicate=lambda name: FlowError(
            f"a step kind named {name!r} is already registered; give the new kind another name"),
            unknown=lambda name, known: FlowError(f"unknown step kind {name!r}; registered kinds: {', '.join(known)}"))

    @overload
    def register(self, item: StepKind) -> StepKind: ...
    @overload
    def register(self, item: Kind) -> Kind: ...

    def register(self, item: StepKind | Kind) -> StepKind | Kind:
        """Register ``item`` (a class, or an instance); a second kind of the same name is an error."""
        if isinstance(item, type):
            super().register(item())
        else:
            super().register(item)
        return item

    def target_keys(self) -> set[str]:
        return {kind.target_key for kind in self}


step_kinds = StepKinds()


@step_kinds.register
class NotebookStep(WorkerStepKind):
    """Runs a notebook with ``notebook_run.execute_notebook``; the executed copy is kept in the run folder."""

    name = "notebook"
    target_key = "notebook"

    def validate(self, check: Checker, where: str, raw: Node, folder: str) -> str | None:
        return self.target_file(check, where, raw, folder)

    def payload(self, run: StepRun, step: Step) -> dict[str, Any]:
        source = run.render(step, step.target)
        if not os.path.isfile(source):
            raise FlowError(f"step {step.name}: notebook {source} does not exist; fix 'notebook' in {run.flow.path}")
        parameters = run.render(step, step.parameters)
        try:
            if "batch_id" in notebook_parameters(source):
                parameters.setdefault("batch_id", run.batch_id)  # the run's batch id reaches every notebook taking one
            check_parameters(source, parameters)
        except NotebookRunError as exc:
            raise FlowError(f"step {step.name}: {exc}") from exc
        return {"source": source, "target": os.path.join(run.folder, "notebooks", f"{step.name}.ipynb"),
                "parameters": parameters}

    def work(self, payload: dict[str, Any]) -> int | None:
        execute_notebook(payload["source"], payload["target"], payload["parameters"])
        return None


@step_kinds.register
class SqlStep(StepKind):
    """Renders a Jinja SQL file and writes its result to the Delta table ``output``, once per batch.

    Before the SQL runs: ``inputs`` become views, then ``source`` the view ``source`` (a datasource's
    table or query, read with Spark's JDBC reader, or a lake table), then each of ``pre_views`` in
    order. A step with a ``source`` and no ``sql`` writes its source as it is."""

    name = "sql"
    target_key = "sql"

    def validate(self, check: Checker, where: str, raw: Node, folder: str) -> str | None:
        if raw.get("sql") is None and raw.get("source") is not None:
            target: str | None = ""  # no SQL: the source as it is
        else:
            target = self.target_file(check, where, raw, folder)
        if target is not None and raw.get("output") is None:
            check.add(where, raw.line, "a sql step needs 'output' (stage, source, table) or 'destination' (path) for "
                      "the Delta table it writes")
        return target

    def run(self, run: StepRun, step: Step, deadline: float) -> int | None:
        source = run.render(step, step.source)
        jdbc = None
        if source and source.get("datasource"):  # its user and password are read now, before Spark starts
            jdbc = jdbc_options(run.flow.datasources[source["datasource"]], source)
        with run.spark_deadline(step, deadline):
            return self._write(run, step, source, jdbc)

    def _write(self, run: StepRun, step: Step, source: dict[str, Any] | None, jdbc: dict[str, str] | None) -> int:
        session = run.spark.newSession()  # temporary views of its own: steps running side by side may share names
        output = run.render(step, step.output)
        path = run.lake.table(output["stage"], output["source"], output["table"])
        app_id = f"oea.flow/{run.flow.name}/{step.name}/{run.batch_id}"
        store = delta_store(session)  # its settings (timestamps as delta-rs reads them) on the step's session
        if store.applied(path, app_id):  # before any source is read: a rerun connects to nothing
            log.info("%s: batch %s already written to %s", step.name, run.batch_id, path)
            return 0
        view = functools.partial(run.lake_view, session=session)
        for name, ref in run.render(step, step.inputs).items():
            view(*_ref(step, ref), view=name)
        if jdbc is not None:
            session.read.format("jdbc").options(**jdbc).load().createOrReplaceTempView("source")
        elif source is not None:
            view(*_ref(step, source["table"]), view="source")
        for name, sql in step.pre_views.items():
            session.sql(run.render(step, sql, {"delta": view})).createOrReplaceTempView(name)
        text = "SELECT * FROM source"
        if step.target:
            with open(step.target, encoding="utf-8") as handle:
                text = run.render(step, handle.read(), {"delta": view})
        result = store.write(session.sql(text), path, mode=output.get("mode", "overwrite"), app_id=app_id,
                             metadata={"flow": run.flow.name, "step": step.name, "batch_id": run.batch_id})
        return result.rows


@step_kinds.register
class PythonStep(WorkerStepKind):
    """Calls ``package.module:function`` with the step's parameters (and ``context``, if it takes one)."""

    name = "python"
    target_key = "callable"

    def validate(self, check: Checker, where: str, raw: Node, folder: str) -> str | None:
        target = self.target(check, where, raw)
        if target is not None:
            check.callable(where, raw.line_of(self.target_key), target)
        return target

    def payload(self, run: StepRun, step: Step) -> dict[str, Any]:
        takes_context = "context" in inspect.signature(_function(step.target)).parameters
        return {"target": step.target, "kwargs": run.render(step, step.parameters),
                "context": {**run.context(step), "lake": run.lake} if takes_context else None}

    def work(self, payload: dict[str, Any]) -> StepOutcome:
        kwargs = dict(payload["kwargs"])
        if payload.get("context") is not None:
            kwargs["context"] = payload["context"]
        result = _function(payload["target"])(**kwargs)
        return StepOutcome(_rows(result), _note(result))


def _function(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    function: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return function


def _note(result: object) -> str | None:
    """The one line a python step's result gives of itself (its class's own ``__str__``, as GoldResult's
    names the tables not built), for the run log; None for plain values."""
    if result is None or isinstance(result, (bool, int, float, str, list, tuple, dict)):
        return None
    if type(result).__str__ is object.__str__:
        return None
    return str(result).splitlines()[0][:500] if str(result) else None


def _rows(result: object) -> int | None:
    """The rows a python step's result says it wrote: an int, a result's ``rows``, or their sum for a list."""
    if isinstance(result, bool):
        return None
    if isinstance(result, int):
        return result
    if isinstance(result, (list, tuple)):
        rows = [r for r in (getattr(item, "rows", None) for item in result) if isinstance(r, int)]
        return sum(rows) if rows else None
    single = getattr(result, "rows", None)
    return single if isinstance(single, int) else None


def _ref(step: Step, ref: str) -> tuple[str, str, str]:
    parts = str(ref).strip("/").split("/")
    if len(parts) != 3:
        raise FlowError(f"step {step.name}: input {ref!r} must be <stage>/<source>/<table>")
    return parts[0], parts[1], parts[2]
