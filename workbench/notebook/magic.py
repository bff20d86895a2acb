"""``%federate``: the federation from an IPython prompt, one subcommand per API call.

Line magic::

    %federate connect URL --credential FILE [--as NAME]
    %federate connect URL --invitation TOKEN --name NAME [--save-to FILE]
    %federate use VARIABLE
    %federate members
    %federate datasets
    %federate register NAME VARIABLE --target COLUMN [--publish]
    %federate train --dataset D --model M --rounds N [--strategy newton] [--as NAME]
    %federate status [JOB]
    %federate wait [JOB] [--timeout SECONDS]
    %federate history [JOB]
    %federate jobs
    %federate stats --dataset D --columns A,B --range A=LOW:HIGH ... [--bins N]
    %federate panel [JOB]

Cell magic: ``%%federate train [--as NAME] [--wait]`` takes the keyword arguments
of :meth:`workbench.api.Federation.train` in its body, one ``key = value`` a line
(values read as JSON where they parse, as text otherwise), or one JSON object.

A failure prints one line, the error's message and hint, and no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections.abc import Callable
from typing import Any

from workbench.errors import ConfigurationError, MissingDependencyError, WorkbenchError

try:
    from IPython.core.magic import Magics, line_cell_magic, magics_class
except ImportError as exc:  # pragma: no cover - only without IPython
    raise MissingDependencyError(
        "the %federate magic needs IPython, which is not installed",
        hint="install the notebook extra: pip install 'workbench[notebook]'",
    ) from exc

import pandas as pd

from workbench import api

logger = logging.getLogger(__name__)

__all__ = [
    "FederateMagics",
    "load_ipython_extension",
    "parse_spec_body",
    "unload_ipython_extension",
]


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler writing to whatever ``sys.stderr`` is when a record arrives.

    A kernel replaces ``sys.stderr`` to route output to cells, so the stream is
    looked up at each record instead of once.
    """

    # Found by this mark rather than by class, so that a reloaded module still
    # recognises the handler it added before.
    workbench_notebook = True

    def __init__(self, previous_level: int) -> None:
        super().__init__(sys.stderr)
        self.previous_level = previous_level

    def emit(self, record: logging.LogRecord) -> None:
        # Not setStream(): it flushes the stream it replaces, which may be closed.
        self.stream = sys.stderr
        super().emit(record)


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%federate`` and turn on INFO logging of ``workbench``.

    Parameters
    ----------
    ipython : IPython.core.interactiveshell.InteractiveShell
        The shell loading the extension. Loading it again adds no second handler.
    """
    ipython.register_magics(FederateMagics(ipython))
    root = logging.getLogger("workbench")
    if not any(getattr(h, "workbench_notebook", False) for h in root.handlers):
        handler = _CurrentStderr(root.level)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove ``%federate`` and the log handler added by the extension.

    The level of the ``workbench`` logger goes back to what it was before.
    """
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("federate", None)
    root = logging.getLogger("workbench")
    for handler in list(root.handlers):
        if getattr(handler, "workbench_notebook", False):
            root.removeHandler(handler)
            root.setLevel(getattr(handler, "previous_level", logging.NOTSET))


class _Parser(argparse.ArgumentParser):
    """An argument parser that raises ConfigurationError instead of exiting."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise ConfigurationError(
            f"%federate {self.prog.split()[-1]}: {message}",
            hint=f"usage: {self.format_usage().strip().removeprefix('usage: ')}",
        )

    def exit(  # type: ignore[override]
        self, status: int = 0, message: str | None = None
    ) -> Any:
        # Reached only after --help printed its text; stop without leaving IPython.
        raise _HelpShown


class _HelpShown(Exception):
    pass


def _list(text: str) -> list[Any]:
    """Split ``a,b`` into items, each read as JSON where it parses (``0`` -> 0)."""
    return [_value(item.strip()) for item in text.split(",") if item.strip()]


def _range(text: str) -> tuple[str, tuple[float, float]]:
    """Read ``COLUMN=LOW:HIGH``, one histogram range of ``stats``."""
    column, _, bounds = text.rpartition("=")
    low, colon, high = bounds.partition(":")
    try:
        if not column or not colon:
            raise ValueError(text)
        return column, (float(low), float(high))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--range needs COLUMN=LOW:HIGH, got {text!r}"
        ) from None


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_spec_body(body: str) -> dict[str, Any]:
    """Read the body of ``%%federate train``: a JSON object or ``key = value`` lines.

    Parameters
    ----------
    body : str
        The cell. Blank lines and lines starting with ``#`` are skipped; each value
        is read as JSON where it parses (``8``, ``[0, 1]``, ``true``), as text
        otherwise.

    Returns
    -------
    dict
        Keyword arguments of :meth:`workbench.api.Federation.train`.

    Raises
    ------
    ConfigurationError
        If a line has no ``=``, a key is given twice, or JSON is not an object.
    """
    text = body.strip()
    if text.startswith("{"):
        try:
            found = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(
                f"the cell body is not valid JSON: {exc.msg} at line {exc.lineno}",
                hint="write one JSON object, or one key = value a line",
            ) from exc
        return dict(found)
    options: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.partition("=")
        key = key.strip().replace("-", "_")
        if not equals or not key:
            raise ConfigurationError(
                f"line {number} of the cell body is not key = value: {line!r}",
                hint="write e.g. rounds = 8",
            )
        if key in options:
            raise ConfigurationError(
                f"line {number} gives {key!r} a second time",
                hint="give each option once",
            )
        options[key] = _value(value.strip())
    return options


def _parsers() -> dict[str, _Parser]:
    parsers: dict[str, _Parser] = {}

    def add(name: str, description: str) -> _Parser:
        parser = _Parser(prog=f"%federate {name}", description=description)
        parsers[name] = parser
        return parser

    connect = add("connect", "Join with an invitation, or come back with a credential.")
    connect.add_argument("url")
    connect.add_argument("--credential")
    connect.add_argument("--invitation")
    connect.add_argument("--name")
    connect.add_argument("--save-to")
    connect.add_argument("--overwrite", action="store_true")
    connect.add_argument("--as", dest="variable", default="_federation")

    use = add("use", "Use a Federation held in a variable for the next subcommands.")
    use.add_argument("variable")

    add("members", "The federation's members.")
    add("datasets", "Datasets registered here and those members published.")

    register = add("register", "Register a DataFrame of the namespace as a dataset.")
    register.add_argument("name")
    register.add_argument("variable")
    register.add_argument("--target", required=True)
    register.add_argument("--features", type=_list)
    register.add_argument("--publish", action="store_true")
    register.add_argument("--no-serve", dest="serve", action="store_false")

    train = add("train", "Submit an encrypted federated training job.")
    train.add_argument("--dataset")
    train.add_argument("--model")
    train.add_argument("--rounds", type=int)
    train.add_argument("--strategy")
    train.add_argument("--classes", type=_list)
    train.add_argument("--members", type=_list)
    train.add_argument("--min-members", type=int)
    train.add_argument("--validation-fraction", type=float)
    train.add_argument("--local-epochs", type=int)
    train.add_argument("--round-deadline", type=float)
    train.add_argument("--seed", type=int)
    train.add_argument("--key-bits", type=int)
    train.add_argument("--allow-insecure-keys", action="store_true", default=None)
    train.add_argument("--no-standardize", dest="standardize", action="store_false")
    train.add_argument("--as", dest="variable", default="_job")
    train.add_argument("--wait", action="store_true")
    train.add_argument("--timeout", type=float)

    for name, what in (
        ("status", "A job's state, rounds and latest metrics."),
        ("history", "A job's per-round metrics."),
        ("panel", "A live JobPanel of a job."),
    ):
        add(name, what).add_argument("job", nargs="?", default="_job")
    wait = add("wait", "Wait until a job completes, with a progress bar.")
    wait.add_argument("job", nargs="?", default="_job")
    wait.add_argument("--timeout", type=float)

    add("jobs", "The federation's jobs, newest first.")

    stats = add("stats", "Pooled count, mean and std of columns, under encryption.")
    stats.add_argument("--dataset", required=True)
    stats.add_argument("--columns", type=_list, required=True)
    stats.add_argument(
        "--range", dest="ranges", type=_range, action="append", required=True
    )
    stats.add_argument("--bins", type=int, default=10)
    stats.add_argument("--key-bits", type=int, default=2048)
    stats.add_argument("--allow-insecure-keys", action="store_true")
    stats.add_argument("--timeout", type=float)
    return parsers


_TRAIN_OPTIONS = (
    "dataset",
    "model",
    "rounds",
    "strategy",
    "classes",
    "members",
    "min_members",
    "validation_fraction",
    "local_epochs",
    "round_deadline",
    "seed",
    "key_bits",
    "allow_insecure_keys",
)


@magics_class
class FederateMagics(Magics):
    """The ``%federate`` line and cell magic.

    The federation that subcommands act on is the last one connected, or the one
    chosen with ``%federate use``. Jobs are stored in the user namespace (``_job``
    by default) and named by variable or by id.
    """

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.federation: api.Federation | None = None
        self._parsers = _parsers()
        self._commands: dict[str, Callable[[argparse.Namespace], Any]] = {
            "connect": self._connect,
            "use": self._use,
            "members": self._members,
            "datasets": self._datasets,
            "register": self._register,
            "train": self._train,
            "status": self._status,
            "wait": self._wait,
            "history": self._history,
            "jobs": self._jobs,
            "stats": self._stats,
            "panel": self._panel,
        }

    @property
    def _user_ns(self) -> dict[str, Any]:
        assert self.shell is not None, "the magic is used outside an IPython shell"
        return self.shell.user_ns  # type: ignore[no-any-return]

    @line_cell_magic
    def federate(self, line: str, cell: str | None = None) -> Any:
        """Run a ``%federate`` subcommand; ``%federate --help`` lists them."""
        try:
            return self._run(line, cell)
        except _HelpShown:
            return None
        except (WorkbenchError, TimeoutError) as exc:
            print(_one_line(exc), file=sys.stderr)
            return None

    def _run(self, line: str, cell: str | None) -> Any:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise ConfigurationError(
                f"cannot split the %federate line {line!r}: {exc}",
                hint="close every quote",
            ) from exc
        if not words or words[0] in ("-h", "--help", "help"):
            print(_usage(self._parsers))
            return None
        command, rest = words[0], words[1:]
        if command not in self._commands:
            raise ConfigurationError(
                f"%federate has no subcommand {command!r}",
                hint=f"use one of: {', '.join(self._commands)}",
            )
        if cell is not None and command != "train":
            raise ConfigurationError(
                f"%%federate takes a cell body only for train, got {command!r}",
                hint=f"use the line magic: %federate {command} ...",
            )
        arguments = self._parsers[command].parse_args(rest)
        arguments.body = cell
        return self._commands[command](arguments)

    # The federation --------------------------------------------------------------

    def _connect(self, args: argparse.Namespace) -> api.Federation:
        federation = api.connect(
            args.url,
            invitation=args.invitation,
            name=args.name,
            credential=args.credential,
            save_to=args.save_to,
            overwrite=args.overwrite,
        )
        self.federation = federation
        self._user_ns[args.variable] = federation
        print(
            f"connected to {federation.name} as {federation.member} "
            f"({len(federation.members())} members); stored as {args.variable}"
        )
        return federation

    def _use(self, args: argparse.Namespace) -> api.Federation:
        found = self._user_ns.get(args.variable)
        if not isinstance(found, api.Federation):
            raise ConfigurationError(
                f"{args.variable!r} does not hold a Federation, got "
                f"{type(found).__name__}",
                hint="pass the variable that workbench.connect() returned",
            )
        self.federation = found
        return found

    def _current(self) -> api.Federation:
        if self.federation is None:
            raise ConfigurationError(
                "no federation is connected in this kernel",
                hint="run %federate connect URL --credential FILE first",
            )
        return self.federation

    def _members(self, args: argparse.Namespace) -> pd.DataFrame:
        rows = [
            {
                "member": m["name"],
                "joined_at": pd.to_datetime(m["joined_at"], unit="s"),
                "datasets": ", ".join(d["name"] for d in m.get("datasets", [])),
            }
            for m in self._current().members()
        ]
        return pd.DataFrame(rows, columns=["member", "joined_at", "datasets"])

    def _datasets(self, args: argparse.Namespace) -> pd.DataFrame:
        federation = self._current()
        rows: list[dict[str, Any]] = []
        for name in federation.datasets.names():
            local = federation.datasets.get(name)
            rows.append(
                {
                    "dataset": name,
                    "member": federation.member,
                    "rows": len(local.frame),
                    "columns": len(local.frame.columns),
                    "where": "here",
                }
            )
        for member in federation.members():
            if member["name"] == federation.member:
                continue
            for published in member.get("datasets", []):
                rows.append(
                    {
                        "dataset": published["name"],
                        "member": member["name"],
                        "rows": published["rows"],
                        "columns": len(published["schema"]),
                        "where": "published",
                    }
                )
        columns = ["dataset", "member", "rows", "columns", "where"]
        return pd.DataFrame(rows, columns=columns)

    def _register(self, args: argparse.Namespace) -> None:
        data = self._user_ns.get(args.variable)
        if not isinstance(data, pd.DataFrame):
            raise ConfigurationError(
                f"{args.variable!r} is not a pandas DataFrame of this namespace, got "
                f"{type(data).__name__}",
                hint="load the table first, e.g. frame = pd.read_csv(...)",
            )
        dataset = self._current().register_dataset(
            args.name,
            data,
            target=args.target,
            features=args.features,
            publish=args.publish,
            serve=args.serve,
        )
        shared = "schema and row count published" if args.publish else "not published"
        print(
            f"dataset {args.name}: {len(dataset.frame)} rows, target {args.target}, "
            f"{shared}"
        )

    # Jobs ------------------------------------------------------------------------

    def _train(self, args: argparse.Namespace) -> api.Job:
        options = {k: getattr(args, k) for k in _TRAIN_OPTIONS}
        options = {k: v for k, v in options.items() if v is not None}
        if not args.standardize:
            options["standardize"] = False
        if args.body is not None:
            for key, value in parse_spec_body(args.body).items():
                if key in options:
                    raise ConfigurationError(
                        f"{key!r} is given both on the %%federate line and in the "
                        "cell body",
                        hint="give each option once",
                    )
                options[key] = value
        missing = [k for k in ("dataset", "model", "rounds") if k not in options]
        if missing:
            raise ConfigurationError(
                f"%federate train needs {', '.join('--' + k for k in missing)}",
                hint="e.g. %federate train --dataset cancer --model "
                "logistic_regression --rounds 10",
            )
        job = self._current().train(**options)
        self._user_ns[args.variable] = job
        print(f"job {job.id} submitted; stored as {args.variable}")
        if args.wait:
            job.wait(progress=True, stream=sys.stdout, timeout=args.timeout)
        return job

    def _job(self, reference: str) -> api.Job:
        found = self._user_ns.get(reference)
        if isinstance(found, api.Job):
            return found
        if found is not None:
            raise ConfigurationError(
                f"{reference!r} holds a {type(found).__name__}, not a Job",
                hint="name a variable that %federate train stored, or a job id",
            )
        if reference == "_job":
            raise ConfigurationError(
                "no job in _job: this kernel has submitted none yet",
                hint="run %federate train ..., or name a job id (see %federate jobs)",
            )
        return self._current().job(reference)

    def _status(self, args: argparse.Namespace) -> dict[str, Any]:
        status = self._job(args.job).status()
        closed = sum(1 for r in status["rounds"] if r["state"] == "closed")
        return {
            "id": status["id"],
            "kind": status["kind"],
            "state": status["state"],
            "rounds_closed": closed,
            "total_rounds": status["total_rounds"],
            "members": {m["name"]: m["state"] for m in status["members"]},
            "reason": status["reason"],
            "metrics": status.get("metrics"),
        }

    def _wait(self, args: argparse.Namespace) -> None:
        job = self._job(args.job)
        job.wait(progress=True, stream=sys.stdout, timeout=args.timeout)
        print(f"job {job.id} completed")

    def _history(self, args: argparse.Namespace) -> pd.DataFrame:
        return self._job(args.job).history

    def _jobs(self, args: argparse.Namespace) -> pd.DataFrame:
        columns = ["id", "kind", "state", "current_round", "total_rounds"]
        rows = self._current().jobs()
        return pd.DataFrame([{k: r[k] for k in columns} for r in rows], columns=columns)

    def _stats(self, args: argparse.Namespace) -> pd.DataFrame:
        result = self._current().stats(
            dataset=args.dataset,
            columns=args.columns,
            ranges=dict(args.ranges),
            bins=args.bins,
            key_bits=args.key_bits,
            allow_insecure_keys=args.allow_insecure_keys,
            timeout=args.timeout,
        )
        return result.summary  # type: ignore[no-any-return]

    def _panel(self, args: argparse.Namespace) -> Any:
        from workbench.notebook.widgets import JobPanel

        return JobPanel(self._job(args.job))


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, WorkbenchError):
        text = exc.message if exc.hint is None else f"{exc.message} (hint: {exc.hint})"
    else:
        text = str(exc)
    return "error: " + " ".join(text.split())


def _usage(parsers: dict[str, _Parser]) -> str:
    lines = ["%federate SUBCOMMAND ...; %federate SUBCOMMAND --help for its options"]
    width = max(len(name) for name in parsers)
    for name, parser in parsers.items():
        lines.append(f"  {name:<{width}}  {parser.description}")
    return "\n".join(lines)
