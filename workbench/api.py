"""The programmatic front door: connect, register datasets, train, follow jobs.

>>> import workbench                                        # doctest: +SKIP
>>> fed = workbench.connect("http://127.0.0.1:8470", credential="hospital-a.json")
>>> fed.register_dataset("cancer", frame, target="diagnosis")
>>> job = fed.train(dataset="cancer", model="logistic_regression", rounds=10,
...                 classes=[0, 1])
>>> job.wait(progress=True)
>>> job.model.predict(new_rows)
>>> job.history

A member that registers a dataset serves jobs on it from a background thread
(the member agent) for as long as the Python process runs.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
import phe

from workbench.client import CoordinatorClient
from workbench.crypto import (
    DecryptedSum,
    EncryptedVector,
    decrypt_vector,
    generate_keypair,
    generate_sealing_keypair,
    private_key_from_bytes,
    private_key_to_bytes,
    public_key_from_json,
    public_key_to_json,
    seal,
    unseal,
)
from workbench.errors import (
    CoordinatorUnavailableError,
    JobFailedError,
    JobSpecError,
    PermissionDeniedError,
    WorkbenchError,
)
from workbench.jobs import get_job_kind
from workbench.jobs.spec import EncryptionSpec, JobSpec, parse_spec
from workbench.member.agent import Approval, MemberAgent
from workbench.member.credentials import Credential
from workbench.member.datasets import DatasetRegistry, LocalDataset
from workbench.wire import decode_bundle

logger = logging.getLogger(__name__)

__all__ = ["Federation", "Job", "connect"]


def connect(
    url: str,
    *,
    invitation: str | None = None,
    name: str | None = None,
    credential: Credential | str | os.PathLike[str] | None = None,
    save_to: str | os.PathLike[str] | None = None,
    verify: bool | str = True,
) -> Federation:
    """Join a federation with an invitation, or come back with a credential.

    Parameters
    ----------
    url : str
        The coordinator's base URL.
    invitation : str, optional
        A single-use invitation; ``name`` must then be the invited member name.
    name : str, optional
        This member's name (with ``invitation``).
    credential : Credential or path, optional
        A credential (or its file) from an earlier join.
    save_to : path, optional
        Where to write the credential after joining (mode 0600).
    verify : bool or str, default=True
        TLS verification; a path names a CA bundle.

    Returns
    -------
    Federation

    Raises
    ------
    AuthenticationError
        If the invitation or credential is refused.
    """
    if (invitation is None) == (credential is None):
        raise JobSpecError(
            "connect() needs exactly one of invitation=... and credential=...",
            hint="join once with invitation= and name=, then use credential=",
        )
    if invitation is not None:
        if not name:
            raise JobSpecError(
                "joining with an invitation needs name=, the invited member name"
            )
        private, public = generate_sealing_keypair()
        with CoordinatorClient(url, verify=verify) as anonymous:
            joined = anonymous.join(invitation, name, public)
        found = Credential(
            coordinator=url,
            federation=joined["federation"],
            member=joined["member"],
            token=joined["credential"],
            sealing_private_key=private.hex(),
            sealing_public_key=public.hex(),
        )
        if save_to is not None:
            found.save(save_to)
    elif isinstance(credential, Credential):
        found = credential
    else:
        found = Credential.load(credential)  # type: ignore[arg-type]
    return Federation(found, url=url, verify=verify)


class Federation:
    """A member's handle on its federation.

    Parameters
    ----------
    credential : Credential
        This member's identity.
    url : str or None, default=None
        Coordinator URL; ``None`` uses the credential's.
    verify : bool or str, default=True
        TLS verification.
    """

    def __init__(
        self,
        credential: Credential,
        *,
        url: str | None = None,
        verify: bool | str = True,
    ) -> None:
        self.credential = credential
        self.url = url or credential.coordinator
        self.client = CoordinatorClient(self.url, credential.token, verify=verify)
        self.datasets = DatasetRegistry()
        self._verify = verify
        self._agent: MemberAgent | None = None
        self._approve: Approval | None = None

    def __repr__(self) -> str:
        return f"Federation({self.name!r}, member={self.member!r}, url={self.url!r})"

    @property
    def name(self) -> str:
        """The federation's name."""
        return self.credential.federation

    @property
    def member(self) -> str:
        """This member's name."""
        return self.credential.member

    def members(self) -> list[dict[str, Any]]:
        """The federation's members, with published dataset schemas."""
        return list(self.client.federation()["members"])

    def save_credential(self, path: str | os.PathLike[str]) -> Path:
        """Write this member's credential file (mode 0600)."""
        return self.credential.save(path)

    # Datasets and the agent -------------------------------------------------------

    def register_dataset(
        self,
        name: str,
        data: pd.DataFrame | str | os.PathLike[str],
        *,
        target: str,
        features: Sequence[str] | None = None,
        publish: bool = False,
        serve: bool = True,
    ) -> LocalDataset:
        """Register a local dataset; it never leaves this machine.

        Parameters
        ----------
        name : str
            Name jobs use for it (the same at every member).
        data : pandas.DataFrame or path
            The table, or a CSV/Parquet file.
        target : str
            Target column.
        features : sequence of str, optional
            Feature columns (default: all but the target).
        publish : bool, default=False
            Publish the schema (column names and dtypes) and row count to the
            federation. Values are never published.
        serve : bool, default=True
            Start the member agent in a background thread, so that jobs on this
            dataset are answered.
        """
        dataset = self.datasets.register(
            name, data, target=target, features=features, publish=publish
        )
        if publish:
            self.client.publish_dataset(name, dataset.schema(), len(dataset.frame))
        if serve:
            self.serve()
        return dataset

    def serve(
        self, *, approve: Approval | None = None, poll_wait: float = 20.0
    ) -> None:
        """Start (or keep) the background member agent.

        Parameters
        ----------
        approve : callable, optional
            ``approve(spec) -> bool``, asked before taking part in a job.
        poll_wait : float, default=20.0
            Seconds of each long-poll.
        """
        if approve is not None:
            self._approve = approve
        if self._agent is None:
            self._agent = MemberAgent(
                self.credential,
                self.datasets,
                approve=self._approve,
                poll_wait=poll_wait,
                verify=self._verify,
            )
        self._agent.start()

    def close(self) -> None:
        """Stop the member agent and close connections."""
        if self._agent is not None:
            self._agent.stop(timeout=1.0)
        self.client.close()

    # Jobs -------------------------------------------------------------------------

    def train(
        self,
        *,
        dataset: str,
        model: str,
        rounds: int,
        classes: Sequence[Any] | None = None,
        encrypt: bool = True,
        members: Sequence[str] | None = None,
        min_members: int | None = None,
        round_deadline: float = 120.0,
        seed: int = 0,
        key_bits: int = 2048,
        standardize: bool = True,
        local_epochs: int = 5,
        model_params: Mapping[str, Any] | None = None,
        features: Sequence[str] | None = None,
        target: str | None = None,
        allow_insecure_keys: bool = False,
    ) -> Job:
        """Submit an encrypted FedAvg job and return its handle.

        Parameters
        ----------
        dataset : str
            Dataset name, registered at every participant.
        model : str
            Registry name (see :func:`workbench.models.model_names`).
        rounds : int
            Training rounds (two setup rounds come first with ``standardize``).
        classes : sequence, optional
            Every label of the target; taken from the local dataset if this member
            registered it.
        encrypt : bool, default=True
            Must be true: the coordinator only ever holds ciphertexts.
        members : sequence of str, optional
            Participants; default: every other member, and this one if it
            registered ``dataset``.
        min_members : int, optional
            Fewest updates with which a round may close at its deadline; default:
            all participants.
        round_deadline : float, default=120.0
            Seconds per round.
        seed : int, default=0
            Seed of every random choice.
        key_bits : int, default=2048
            Paillier key size.
        standardize : bool, default=True
            Standardize features with pooled moments computed under encryption.
        local_epochs : int, default=5
            Local solver iterations (or passes) per round.
        model_params : mapping, optional
            Model hyperparameters.
        features, target : optional
            Columns, if they differ from the registered ones.
        allow_insecure_keys : bool, default=False
            Allow ``key_bits`` below 2048 (tests only).

        Returns
        -------
        Job
        """
        from workbench.jobs.fedavg import fedavg_spec

        if not encrypt:
            raise JobSpecError(
                "encrypt=False is not offered: the coordinator only ever holds "
                "ciphertexts",
                hint="leave encrypt=True",
            )
        if classes is None:
            if dataset not in self.datasets:
                raise JobSpecError(
                    "classes= is needed when this member holds no dataset "
                    f"{dataset!r} to read them from",
                    hint="pass classes=[...] listing every label of the target",
                )
            local = self.datasets.get(dataset)
            _, y = local.xy(features, target)
            classes = sorted(pd.unique(y).tolist())
        participants = self._participants(dataset, members)
        spec = fedavg_spec(
            dataset=dataset,
            model=model,
            rounds=rounds,
            classes=classes,
            members=participants,
            standardize=standardize,
            local_epochs=local_epochs,
            model_params=model_params,
            features=features,
            target=target,
            min_members=min_members,
            round_deadline=round_deadline,
            seed=seed,
            encryption=EncryptionSpec(
                key_bits=key_bits, allow_insecure_keys=allow_insecure_keys
            ),
        )
        return self.submit(spec)

    def conformal(
        self,
        *,
        dataset: str,
        task: str = "classification",
        rule: str = "mean",
        classes: Sequence[Any] | None = None,
        candidates: Sequence[float] | None = None,
        mondrian: bool = False,
        model: str | None = None,
        model_params: Mapping[str, Any] | None = None,
        members: Sequence[str] | None = None,
        min_members: int | None = None,
        round_deadline: float = 120.0,
        seed: int = 0,
        key_bits: int = 2048,
        allow_insecure_keys: bool = False,
        **options: Any,
    ) -> Any:
        """Non-disclosive conformal prediction by the members: a querier handle.

        Each call of the handle's ``predict_p``, ``predict_set``, ``predict_int``
        or ``evaluate`` is one conformal job: the query objects go in plaintext
        through the coordinator to every participant (the spec says so), each
        member trains and calibrates on its registered ``dataset`` and answers
        with p-values, encrypted under the mean rules and sealed to this member
        under ``median``. See docs/conformal.md.

        Parameters
        ----------
        dataset : str
            Dataset name, registered at every participant.
        task : {"classification", "regression"}, default="classification"
        rule : {"mean", "weighted_mean", "median", "twice_mean"}, default="mean"
        classes : sequence, optional
            Every label of the target; taken from the local dataset if this
            member registered it (classification).
        candidates : sequence of float, optional
            Increasing grid of target values (regression, required).
        mondrian : bool, default=False
            Calibrate each class on its own examples.
        model : str, optional
            A random forest by default; see
            :data:`workbench.jobs._conformal_job.CONFORMAL_MODELS`.
        model_params : mapping, optional
        members : sequence of str, optional
            Participants; default as in :meth:`train`.
        min_members : int, optional
            Fewest replies with which a query succeeds; default 2 (1 with a
            single participant), so that a mean is never one member's p-values
            unless the federation has only one member.
        round_deadline : float, default=120.0
        seed : int, default=0
        key_bits : int, default=2048
        allow_insecure_keys : bool, default=False
            Allow ``key_bits`` below 2048 (tests only).
        **options
            ``smoothing``, ``calibration_size``, ``bits``, ``features``,
            ``target``, ``timeout``.

        Returns
        -------
        workbench.jobs.conformal.ConformalQuerier
        """
        from workbench.jobs.conformal import ConformalQuerier

        if task == "classification" and classes is None:
            if dataset not in self.datasets:
                raise JobSpecError(
                    "classes= is needed when this member holds no dataset "
                    f"{dataset!r} to read them from",
                    hint="pass classes=[...] listing every label of the target",
                )
            local = self.datasets.get(dataset)
            _, y = local.xy(options.get("features"), options.get("target"))
            classes = sorted(pd.unique(y).tolist())
        if task == "classification":
            options["mondrian"] = mondrian
        participants = self._participants(dataset, members)
        if min_members is None:
            min_members = min(2, len(participants))
        return ConformalQuerier(
            self,
            dataset=dataset,
            task=task,
            rule=rule,
            classes=classes,
            candidates=candidates,
            model=model,
            model_params=model_params,
            members=participants,
            min_members=min_members,
            round_deadline=round_deadline,
            seed=seed,
            key_bits=key_bits,
            allow_insecure_keys=allow_insecure_keys,
            **options,
        )

    def stats(
        self,
        *,
        dataset: str,
        columns: Sequence[str],
        bins: int = 10,
        ranges: Mapping[str, tuple[float, float]] | None = None,
        bounds: Mapping[str, float] | None = None,
        members: Sequence[str] | None = None,
        min_members: int | None = None,
        min_rows: int = 5,
        round_deadline: float = 120.0,
        key_bits: int = 2048,
        allow_insecure_keys: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """Pooled count, means, standard deviations and histograms of columns.

        Each member's counts and sums are added under Paillier encryption; only
        the pooled figures are decrypted, here.

        Parameters
        ----------
        dataset : str
            Dataset name, registered at every participant.
        columns : sequence of str
            Numeric columns to summarize (complete rows only).
        bins : int, default=10
            Histogram bins per column, evenly spaced over its range.
        ranges : mapping of str to (float, float), optional
            Histogram range per column; default: the range of this member's own
            copy of the dataset (needed when this member holds none).
        bounds : mapping of str to float, optional
            Clip bound of each column's values; default: ten times the largest
            magnitude of its range (see :mod:`workbench.jobs.stats`).
        members, min_members, round_deadline, key_bits, allow_insecure_keys
            As in :meth:`train`.
        min_rows : int, default=5
            A member with fewer complete rows refuses to answer.
        timeout : float, optional
            Seconds to wait for the result.

        Returns
        -------
        workbench.jobs.stats.StatsResult
            ``summary`` (a DataFrame of count, mean, std per column) and
            ``histograms`` (a DataFrame of bins per column).
        """
        import numpy as np

        from workbench.jobs.stats import stats_spec, summarize

        names = [str(c) for c in columns]
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise JobSpecError(
                f"bins must be a positive integer, got {bins!r}",
                hint="pass bins=10, say",
            )
        given = dict(ranges or {})
        edges = []
        for name in names:
            if name in given:
                low, high = (float(v) for v in given[name])
            elif dataset in self.datasets:
                frame = self.datasets.get(dataset).frame
                if name not in frame.columns:
                    raise JobSpecError(
                        f"the dataset {dataset!r} has no column {name!r}",
                        hint="name columns of the registered dataset",
                    )
                values = pd.to_numeric(frame[name], errors="coerce").dropna()
                low, high = float(values.min()), float(values.max())
                if high <= low:
                    high = low + 1.0
            else:
                raise JobSpecError(
                    f"no histogram range for column {name!r}, and this member holds "
                    f"no dataset {dataset!r} to take one from",
                    hint="pass ranges={column: (low, high)}",
                )
            edges.append(np.linspace(low, high, bins + 1).tolist())
        spec = stats_spec(
            dataset=dataset,
            columns=names,
            edges=edges,
            members=self._participants(dataset, members),
            bounds=None if bounds is None else [float(bounds[n]) for n in names],
            min_rows=min_rows,
            round_deadline=round_deadline,
            min_members=min_members,
            encryption=EncryptionSpec(
                key_bits=key_bits, allow_insecure_keys=allow_insecure_keys
            ),
        )
        job = self.submit(spec)
        job.wait(timeout=timeout)
        return summarize(spec, job.aggregate(1))

    def submit(self, spec: JobSpec | Mapping[str, Any]) -> Job:
        """Submit any job spec: make its key pair, seal it to members, send it.

        ``spec.members`` defaults as in :meth:`train`. The private key is sealed
        to each participant and to this member, so that this member can follow
        the job again later with :meth:`job`.
        """
        if not isinstance(spec, JobSpec):
            spec = parse_spec(dict(spec))
        if spec.members is None:
            spec = spec.model_copy(
                update={"members": self._participants(spec.dataset, None)}
            )
        kind = get_job_kind(spec.kind)
        if kind.check_options is not None:
            kind.check_options(spec)
        if self.member in (spec.members or []) and spec.dataset in self.datasets:
            self.serve()
        public_key, private_key = generate_keypair(
            spec.encryption.key_bits,
            allow_insecure=spec.encryption.allow_insecure_keys,
        )
        keys = self._sealing_keys()
        secret = private_key_to_bytes(private_key)
        holders = list(dict.fromkeys([*(spec.members or []), self.member]))
        sealed = {name: seal(secret, keys[name]) for name in holders}
        status = self.client.submit_job(
            spec.model_dump(mode="json"), public_key_to_json(public_key), sealed
        )
        logger.info("job %s submitted (%s)", status["id"], spec.kind)
        return Job(self, status["id"], spec, public_key, private_key)

    def job(self, job_id: str) -> Job:
        """Follow a job submitted earlier (or one this member takes part in)."""
        status = self.client.job(job_id)
        public_json, _, sealed = self.client.job_key(job_id)
        secret = unseal(sealed, bytes.fromhex(self.credential.sealing_private_key))
        return Job(
            self,
            job_id,
            parse_spec(status["spec"]),
            public_key_from_json(public_json),
            private_key_from_bytes(secret),
        )

    def jobs(self) -> list[dict[str, Any]]:
        """Summaries of the federation's jobs."""
        return self.client.jobs()

    def _participants(self, dataset: str, members: Sequence[str] | None) -> list[str]:
        if members is not None:
            return list(members)
        names = [m["name"] for m in self.members()]
        chosen = [n for n in names if n != self.member]
        if dataset in self.datasets:
            chosen.append(self.member)
        if not chosen:
            raise JobSpecError(
                f"the federation {self.name!r} has no other member to take part",
                hint="invite members first, or register the dataset here",
            )
        return chosen

    def _sealing_keys(self) -> dict[str, bytes]:
        return {
            m["name"]: bytes.fromhex(m["sealing_public_key"]) for m in self.members()
        }


class Job:
    """A handle on a submitted job.

    Attributes
    ----------
    id : str
    spec : JobSpec
    """

    def __init__(
        self,
        federation: Federation,
        job_id: str,
        spec: JobSpec,
        public_key: phe.PaillierPublicKey,
        private_key: phe.PaillierPrivateKey,
    ) -> None:
        self.federation = federation
        self.id = job_id
        self.spec = spec
        self.public_key = public_key
        self._private_key = private_key
        self._sums: dict[int, dict[str, DecryptedSum]] = {}
        self._status: dict[str, Any] | None = None

    def __repr__(self) -> str:
        state = self._status["state"] if self._status else "unknown"
        return f"Job({self.id!r}, kind={self.spec.kind!r}, state={state!r})"

    def status(self) -> dict[str, Any]:
        """The job's state, rounds and members, with the latest decrypted metrics.

        Returns
        -------
        dict
            The coordinator's status, plus ``metrics`` (the last closed round's
            row of :attr:`history`, for FedAvg jobs).
        """
        status = self.federation.client.job(self.id)
        self._status = status
        if self.spec.kind == "fedavg":
            table = self.history
            status["metrics"] = (
                None if table.empty else table.iloc[-1].to_dict()  # type: ignore[assignment]
            )
        return status

    def wait(
        self,
        *,
        progress: bool = False,
        timeout: float | None = None,
        stream: TextIO | None = None,
        on_round: Callable[[dict[str, Any]], None] | None = None,
    ) -> Job:
        """Wait until the job completes.

        Parameters
        ----------
        progress : bool, default=False
            Draw a progress bar of rounds on ``stream`` (default: stderr).
        timeout : float, optional
            Give up after this many seconds (raises TimeoutError).
        stream : text stream, optional
            Where the progress bar goes.
        on_round : callable, optional
            Called with the status whenever it changes.

        Returns
        -------
        Job
            ``self``.

        Raises
        ------
        JobFailedError
            If the job failed; the message carries the coordinator's reason.
        TimeoutError
            If ``timeout`` passed first.
        """
        out = stream or sys.stderr
        started = time.monotonic()
        status = self.federation.client.job(self.id)
        while True:
            self._status = status
            if on_round is not None:
                on_round(status)
            if progress:
                _draw(out, status, time.monotonic() - started)
            if status["state"] != "running":
                break
            if timeout is not None and time.monotonic() - started > timeout:
                raise TimeoutError(
                    f"job {self.id} still runs after {timeout} s (round "
                    f"{status['current_round']} of {status['total_rounds']})"
                )
            try:
                status = self.federation.client.job(
                    self.id, after=status["last_event"], wait=10.0
                )
            except CoordinatorUnavailableError:
                # A restarted coordinator resumes the job: keep following it.
                logger.warning("job %s: coordinator unreachable, retrying", self.id)
                time.sleep(0.5)
        if progress:
            out.write("\n")
            out.flush()
        if status["state"] == "failed":
            raise JobFailedError(
                f"job {self.id} failed: {status['reason']}",
                hint="see job.status()['members'] for each member's state",
            )
        return self

    def aggregate(self, round: int) -> dict[str, DecryptedSum]:
        """The decrypted aggregate of a closed round, by vector name."""
        if round not in self._sums:
            data = self.federation.client.aggregate(self.id, round, wait=0)
            if data is None:
                raise PermissionDeniedError(
                    f"round {round} of job {self.id} has not closed yet",
                    hint="wait for it: job.wait()",
                )
            self._sums[round] = {
                name: decrypt_vector(
                    self._private_key, EncryptedVector.from_bytes(raw, self.public_key)
                )
                for name, raw in decode_bundle(data).items()
            }
        return self._sums[round]

    def _closed_rounds(self) -> list[int]:
        status = self._status or self.federation.client.job(self.id)
        if status["state"] == "running":
            status = self.federation.client.job(self.id)
            self._status = status
        return [r["number"] for r in status["rounds"] if r["state"] == "closed"]

    @property
    def history(self) -> pd.DataFrame:
        """Per-round metrics (FedAvg), decrypted by this member."""
        from workbench.jobs.fedavg import history

        self._require_kind("fedavg")
        sums = {r: self.aggregate(r) for r in self._closed_rounds()}
        return history(self.spec, sums)

    @property
    def model(self) -> Any:
        """The global model (FedAvg): a fitted scikit-learn Pipeline."""
        from workbench.jobs.fedavg import build_model

        self._require_kind("fedavg")
        sums = {r: self.aggregate(r) for r in self._closed_rounds()}
        return build_model(self.spec, sums)

    def _require_kind(self, kind: str) -> None:
        if self.spec.kind != kind:
            raise WorkbenchError(
                f"job {self.id} is a {self.spec.kind} job, not {kind}",
                hint="use job.aggregate(round) for other kinds",
            )


def _draw(out: TextIO, status: dict[str, Any], elapsed: float) -> None:
    total = int(status["total_rounds"])
    done = sum(1 for r in status["rounds"] if r["state"] == "closed")
    width = 30
    filled = int(width * done / max(total, 1))
    bar = "#" * filled + "-" * (width - filled)
    out.write(
        f"\rjob {status['id'][:8]} [{bar}] round {done}/{total} "
        f"{status['state']} {elapsed:5.1f}s"
    )
    out.flush()
