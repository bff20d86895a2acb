"""ipywidgets panels: joining, registering a dataset, following a job.

Each panel is a thin face on :mod:`workbench.api`: its button calls one function
there (:func:`~workbench.api.connect`, :meth:`~workbench.api.Federation.
register_dataset`, :meth:`~workbench.api.Job.status`), and the same method can be
called without a click (``panel.connect()``, ``panel.register()``,
``panel.refresh()``). A panel displays itself in a notebook; its widgets are
attributes, and ``panel.widget`` is the box that holds them.

ipywidgets is optional: install the notebook extra, ``pip install
'workbench[notebook]'``.
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable, MutableMapping
from typing import Any

from workbench.errors import (
    ConfigurationError,
    CoordinatorUnavailableError,
    MissingDependencyError,
    WorkbenchError,
)

try:
    import ipywidgets as w
except ImportError as exc:
    raise MissingDependencyError(
        "the notebook panels need ipywidgets, which is not installed",
        hint="install the notebook extra: pip install 'workbench[notebook]'",
    ) from exc

import pandas as pd

from workbench import api

logger = logging.getLogger(__name__)

__all__ = ["DatasetPanel", "JobPanel", "JoinPanel"]


def _error_html(exc: BaseException) -> str:
    if isinstance(exc, WorkbenchError):
        text = exc.message if exc.hint is None else f"{exc.message} (hint: {exc.hint})"
    else:
        text = str(exc)
    return f"<span style='color:#b00020'>{html.escape(text)}</span>"


def _user_namespace() -> MutableMapping[str, Any] | None:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return None if shell is None else shell.user_ns  # type: ignore[no-any-return]


class _Panel:
    widget: w.Box

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


class JoinPanel(_Panel):
    """Join a federation with an invitation, or come back with a credential.

    With an invitation, the member name is needed and the credential path, if
    given, is where the new credential is written; without one, the credential
    path is the file of an earlier join.

    Parameters
    ----------
    url : str, default=""
        The coordinator's URL, filled in.
    credential : str, default=""
        A credential path, filled in.
    on_connect : callable, optional
        Called with the :class:`~workbench.api.Federation` once connected.
    namespace : mutable mapping, optional
        Where to store the federation as ``variable``; default: the IPython user
        namespace, if there is one.
    variable : str, default="_federation"

    Attributes
    ----------
    federation : Federation or None
        The federation connected by the last successful click.
    """

    def __init__(
        self,
        *,
        url: str = "",
        credential: str = "",
        on_connect: Callable[[api.Federation], None] | None = None,
        namespace: MutableMapping[str, Any] | None = None,
        variable: str = "_federation",
    ) -> None:
        self.url = w.Text(value=url, description="Coordinator")
        self.invitation = w.Password(description="Invitation")
        self.name = w.Text(description="Member name")
        self.credential = w.Text(
            value=credential, description="Credential", placeholder="hospital-a.json"
        )
        self.button = w.Button(description="Connect", button_style="primary")
        self.message = w.HTML()
        self.widget = w.VBox(
            [self.url, self.invitation, self.name, self.credential, self.button]
            + [self.message]
        )
        self.federation: api.Federation | None = None
        self._on_connect = on_connect
        self._namespace = namespace if namespace is not None else _user_namespace()
        self._variable = variable
        self.button.on_click(lambda _: self.connect())

    def connect(self) -> api.Federation | None:
        """Connect with the values in the fields (what the button does).

        Returns
        -------
        Federation or None
            ``None`` if the connection failed; the panel then shows the reason.
        """
        url = self.url.value.strip()
        invitation = self.invitation.value.strip()
        credential = self.credential.value.strip() or None
        try:
            if invitation:
                federation = api.connect(
                    url,
                    invitation=invitation,
                    name=self.name.value.strip() or None,
                    save_to=credential,
                )
            else:
                if credential is None:
                    raise ConfigurationError(
                        "neither an invitation nor a credential file is filled in",
                        hint="paste the invitation and a member name to join, or "
                        "give the credential file of an earlier join",
                    )
                federation = api.connect(url, credential=credential)
        except WorkbenchError as exc:
            self.message.value = _error_html(exc)
            return None

        # A redeemed invitation cannot be used again: clear it from the form.
        self.invitation.value = ""
        self.federation = federation
        if self._namespace is not None:
            self._namespace[self._variable] = federation
        saved = f", credential in {html.escape(credential)}" if credential else ""
        self.message.value = html.escape(
            f"connected to {federation.name} as {federation.member}"
        ) + (saved if invitation else "")
        if self._on_connect is not None:
            self._on_connect(federation)
        return federation


class DatasetPanel(_Panel):
    """Register a DataFrame of the namespace as a dataset of this member.

    Parameters
    ----------
    federation : Federation
        The member's federation.
    namespace : mapping, optional
        Where DataFrames are looked for; default: the IPython user namespace.

    Raises
    ------
    ConfigurationError
        If there is no namespace to look in.
    """

    def __init__(
        self,
        federation: api.Federation,
        *,
        namespace: MutableMapping[str, Any] | None = None,
    ) -> None:
        found = namespace if namespace is not None else _user_namespace()
        if found is None:
            raise ConfigurationError(
                "DatasetPanel found no IPython namespace to pick DataFrames from",
                hint="pass namespace=globals(), or call federation.register_dataset()",
            )
        self.federation = federation
        self._namespace = found
        self.variable = w.Dropdown(description="DataFrame")
        self.target = w.Dropdown(description="Target")
        self.name = w.Text(description="Dataset name")
        self.publish = w.Checkbox(
            description="publish schema and row count", indent=False
        )
        self.rescan = w.Button(description="Rescan")
        self.button = w.Button(description="Register", button_style="primary")
        self.message = w.HTML()
        self.widget = w.VBox(
            [
                w.HBox([self.variable, self.rescan]),
                self.target,
                self.name,
                self.publish,
                self.button,
                self.message,
            ]
        )
        self.variable.observe(self._picked, names="value")
        self.rescan.on_click(lambda _: self.refresh())
        self.button.on_click(lambda _: self.register())
        self.refresh()

    def refresh(self) -> None:
        """List the namespace's DataFrames again."""
        names = sorted(
            key
            for key, value in self._namespace.items()
            if isinstance(value, pd.DataFrame) and not key.startswith("_")
        )
        chosen = self.variable.value
        self.variable.options = names
        if chosen in names:
            self.variable.value = chosen
        elif names:
            self.variable.value = names[0]
        self._picked()

    def _picked(self, change: object = None) -> None:
        frame = self._namespace.get(self.variable.value or "")
        columns = [str(c) for c in frame.columns] if frame is not None else []
        self.target.options = columns
        if columns:
            self.target.value = columns[-1]
        if self.variable.value:
            self.name.value = str(self.variable.value)

    def register(self) -> Any:
        """Register the chosen DataFrame (what the button does).

        Returns
        -------
        LocalDataset or None
            ``None`` if it failed; the panel then shows the reason.
        """
        try:
            if not self.variable.value:
                raise ConfigurationError(
                    "no DataFrame is chosen: the namespace holds none",
                    hint="load a table into a variable, then press Rescan",
                )
            dataset = self.federation.register_dataset(
                self.name.value.strip(),
                self._namespace[self.variable.value],
                target=str(self.target.value),
                publish=bool(self.publish.value),
            )
        except WorkbenchError as exc:
            self.message.value = _error_html(exc)
            return None
        self.message.value = html.escape(
            f"dataset {dataset.name}: {len(dataset.frame)} rows, target "
            f"{self.target.value}; it stays on this machine"
        )
        return dataset


class JobPanel(_Panel):
    """Follow a job: a progress bar per round and the per-round metrics.

    Parameters
    ----------
    job : Job
        The job to follow.
    interval : float, default=1.0
        Seconds between refreshes of the background thread.
    follow : bool, default=True
        Start the background thread at once; otherwise refresh with the button or
        :meth:`refresh`, or call :meth:`start`.

    Notes
    -----
    Each refresh is one :meth:`~workbench.api.Job.status` call; for FedAvg jobs
    it decrypts each newly closed round's aggregate once (it is cached in the job),
    so following costs a poll per ``interval`` and nothing per round already shown.
    """

    def __init__(
        self, job: api.Job, *, interval: float = 1.0, follow: bool = True
    ) -> None:
        self.job = job
        self.interval = float(interval)
        self.title = w.HTML()
        self.progress = w.IntProgress(
            value=0, min=0, max=1, description="rounds", bar_style="info"
        )
        self.rounds = w.VBox()
        self.metrics = w.HTML()
        self.message = w.HTML()
        self.button = w.Button(description="Refresh")
        self.widget = w.VBox(
            [self.title, self.progress, self.rounds, self.metrics]
            + [w.HBox([self.button, self.message])]
        )
        self.status_: dict[str, Any] | None = None
        self.error_: WorkbenchError | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bars: dict[int, tuple[w.IntProgress, w.Label]] = {}
        self.button.on_click(lambda _: self.refresh())
        if follow:
            self.start()

    def refresh(self) -> dict[str, Any] | None:
        """Fetch the job's status and redraw (what the button does).

        Returns
        -------
        dict or None
            The status of :meth:`workbench.api.Job.status`, or ``None`` if it
            could not be fetched; the panel then shows the reason.
        """
        with self._lock:
            try:
                status = self.job.status()
                table = self.job.history if self.job.spec.kind == "fedavg" else None
            except WorkbenchError as exc:
                self.error_ = exc
                self.message.value = _error_html(exc)
                return None
            self.error_ = None
            self.message.value = ""
            self.status_ = status
            self._draw(status, table)
            return status

    def _draw(self, status: dict[str, Any], table: pd.DataFrame | None) -> None:
        total = int(status["total_rounds"])
        closed = sum(1 for r in status["rounds"] if r["state"] == "closed")
        state = str(status["state"])
        self.title.value = html.escape(
            f"job {status['id']} ({status['kind']}): {state}, round {closed} of {total}"
        ) + (
            f"<br>{html.escape(str(status['reason']))}" if status.get("reason") else ""
        )
        self.progress.max = max(total, 1)
        self.progress.value = closed
        self.progress.bar_style = {"completed": "success", "failed": "danger"}.get(
            state, "info"
        )
        expected = max(len(self.job.spec.members or []), 1)
        for item in status["rounds"]:
            number = int(item["number"])
            if number not in self._bars:
                bar = w.IntProgress(min=0, max=expected, description=f"round {number}")
                label = w.Label()
                self._bars[number] = (bar, label)
                self.rounds.children = (*self.rounds.children, w.HBox([bar, label]))
            bar, label = self._bars[number]
            answered = len(item["updates"]) + len(item["failed"])
            bar.value = min(answered, expected)
            bar.bar_style = "success" if item["state"] == "closed" else "info"
            label.value = (
                f"{len(item['updates'])} of {expected} updates, {item['state']}"
            )
        if table is not None and not table.empty:
            shown = table.dropna(axis="columns", how="all")
            self.metrics.value = shown.to_html(
                index=False, float_format=lambda v: f"{v:.4f}", na_rep=""
            )

    def start(self) -> None:
        """Refresh from a background thread until the job ends or :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._follow, name=f"workbench-panel-{self.job.id[:8]}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread (it ends after its current refresh)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the background thread to end; return whether it has."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _follow(self) -> None:
        while not self._stop.is_set():
            status = self.refresh()
            if status is not None and status["state"] != "running":
                return
            # An unreachable coordinator may come back; any other error would only
            # repeat, so the panel keeps showing it and stops following.
            if status is None and not isinstance(
                self.error_, CoordinatorUnavailableError
            ):
                logger.warning("job %s: the panel stopped following", self.job.id)
                return
            self._stop.wait(self.interval)
