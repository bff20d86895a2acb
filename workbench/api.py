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
import math
import numbers
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeGuard

import pandas as pd
import phe
from pydantic import ValidationError

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
    ConfigurationError,
    CoordinatorUnavailableError,
    CredentialFileError,
    JobFailedError,
    JobSpecError,
    PermissionDeniedError,
    WorkbenchError,
)
from workbench.jobs import get_job_kind
from workbench.jobs.spec import EncryptionSpec, JobSpec, parse_spec
from workbench.member.agent import Approval, MemberAgent
from workbench.member.credentials import Credential, check_writable, fallback_path
from workbench.member.datasets import (
    DatasetRegistry,
    LocalDataset,
    published_features,
)
from workbench.names import validate_name
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
    overwrite: bool = False,
    verify: bool | str = True,
) -> Federation:
    """Join a federation with an invitation, or come back with a credential.

    Parameters
    ----------
    url : str
        The coordinator's base URL, ``http://...`` or ``https://...``.
    invitation : str, optional
        A single-use invitation; ``name`` must then be the invited member name.
    name : str, optional
        This member's name (with ``invitation``).
    credential : Credential or path, optional
        A credential (or its file) from an earlier join.
    save_to : path, optional
        Where to write the credential after joining (mode 0600). The path is
        checked before the invitation is redeemed.
    overwrite : bool, default=False
        Replace an existing file at ``save_to``; without it one is refused.
    verify : bool or str, default=True
        TLS verification; a path names a CA bundle.

    Returns
    -------
    Federation

    Raises
    ------
    ConfigurationError
        If an argument is missing or of the wrong type.
    CredentialFileError
        If ``save_to`` cannot be written (checked before joining), or ``credential``
        names a folder. A credential that could not be written after joining is
        saved beside ``save_to``; the message names that file.
    InvalidNameError
        If ``name`` breaks the naming rule.
    AuthenticationError
        If the invitation or credential is refused.
    """
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"url must be the coordinator's address as a string, got {url!r}",
            hint="pass e.g. connect('http://127.0.0.1:8470', credential='a.json')",
        )
    if (invitation is None) == (credential is None):
        raise ConfigurationError(
            "connect() needs exactly one of invitation=... and credential=..., got "
            f"{'both' if invitation is not None else 'neither'}",
            hint="join once with invitation= and name=, then use credential=",
        )
    if invitation is not None:
        return _join(url, invitation, name, save_to, overwrite, verify)
    if isinstance(credential, Credential):
        found = credential
    elif isinstance(credential, str | os.PathLike):
        found = Credential.load(credential)
    else:
        raise ConfigurationError(
            f"credential must be a Credential or the path of its file, got a "
            f"{type(credential).__name__}",
            hint="pass the file that join wrote: credential='hospital-a.json'",
        )
    return Federation(found, url=url, verify=verify)


def _join(
    url: str,
    invitation: object,
    name: object,
    save_to: str | os.PathLike[str] | None,
    overwrite: bool,
    verify: bool | str,
) -> Federation:
    if not isinstance(invitation, str) or not invitation:
        raise ConfigurationError(
            f"invitation must be the invitation token as a string, got "
            f"{type(invitation).__name__}",
            hint="pass the token that `workbench invite` printed",
        )
    if name is None:
        raise ConfigurationError(
            "joining with an invitation needs name=, the invited member name",
            hint="pass name='hospital-a', the name the invitation was issued for",
        )
    validate_name("member", name)
    assert isinstance(name, str)
    if save_to is not None:
        if not isinstance(save_to, str | os.PathLike):
            raise ConfigurationError(
                f"save_to must be a file path, got a {type(save_to).__name__}",
                hint="pass save_to='hospital-a.json'",
            )
        check_writable(save_to, overwrite=overwrite)
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
    logger.info("joined %s as %s", found.federation, found.member)
    if save_to is not None:
        try:
            found.save(save_to, overwrite=overwrite)
        except CredentialFileError as exc:
            spare = _save_spare(found, save_to)
            logger.warning(
                "the credential could not be written to %s; saved to %s instead",
                save_to,
                spare,
            )
            raise CredentialFileError(
                f"joined {found.federation} as {found.member}, but the credential "
                f"could not be written to {save_to} ({exc.message}); it was saved "
                f"to {spare} instead",
                hint=f"move {spare} where you want it; connect with credential=",
            ) from exc
    return Federation(found, url=url, verify=verify)


def _save_spare(found: Credential, wanted: str | os.PathLike[str]) -> Path:
    # Beside the wanted path first, then in the working folder.
    candidates = [fallback_path(wanted), fallback_path(Path.cwd() / Path(wanted).name)]
    for candidate in candidates:
        try:
            return found.save(candidate)
        except CredentialFileError as exc:
            logger.warning(
                "the credential could not be saved to %s either: %s",
                candidate,
                exc.message,
            )
    raise CredentialFileError(
        f"joined {found.federation} as {found.member}, but the credential could not "
        f"be written to {wanted}, beside it, or to the working folder",
        hint="the member is lost: ask for a new invitation, and join to a folder "
        "you can write to",
    )


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

    def save_credential(
        self, path: str | os.PathLike[str], *, overwrite: bool = False
    ) -> Path:
        """Write this member's credential file (mode 0600).

        An existing file is refused unless ``overwrite=True``.
        """
        return self.credential.save(path, overwrite=overwrite)

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
        strategy: str = "fedavg",
        validation_fraction: float = 0.2,
        model_params: Mapping[str, Any] | None = None,
        features: Sequence[str] | None = None,
        target: str | None = None,
        allow_insecure_keys: bool = False,
    ) -> Job:
        """Submit an encrypted federated training job and return its handle.

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
            Participants; default: the other members that published ``dataset``
            (its name at least), and this one if it registered ``dataset``; every
            other member, with a WARNING, if none published it.
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
        strategy : {"fedavg", "newton"}, default="fedavg"
            ``"fedavg"`` averages locally trained parameters; ``"newton"`` (binary
            ``logistic_regression`` only) adds the members' gradients and Hessians
            under encryption and takes one Newton step per round, which reaches the
            pooled model's optimum (see :mod:`workbench.jobs.fedavg`).
        validation_fraction : float, default=0.2
            Share of each member's rows kept out of training for the per-round
            validation metrics; 0 trains on every row (metrics are then in-sample).
        model_params : mapping, optional
            Model hyperparameters.
        features, target : optional
            Columns, if they differ from the registered ones. ``features`` is a
            list of names. Without it the job pins this member's registered
            features, or else the features of the participants' published
            schemas when all published alike; the model then matches DataFrame
            columns by name. When neither exists the spec names no features and
            each member uses its own registered columns by position.
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
        features = _check_features(features)
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
        _check_round_options(
            rounds=rounds,
            round_deadline=round_deadline,
            seed=seed,
            max_rounds=_MAX_ROUNDS - (2 if standardize else 0),
        )
        participants = self._participants(dataset, members)
        _check_min_members(min_members, len(participants))
        features = self._pin_features(dataset, features, target, participants)
        with _spec_errors():
            encryption = EncryptionSpec(
                key_bits=key_bits, allow_insecure_keys=allow_insecure_keys
            )
            spec = fedavg_spec(
                dataset=dataset,
                model=model,
                rounds=rounds,
                classes=classes,
                members=participants,
                standardize=standardize,
                local_epochs=local_epochs,
                strategy=strategy,
                validation_fraction=validation_fraction,
                model_params=model_params,
                features=features,
                target=target,
                min_members=min_members,
                round_deadline=round_deadline,
                seed=seed,
                encryption=encryption,
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

        unknown = sorted(set(options) - set(_CONFORMAL_OPTIONS))
        if unknown:
            raise ConfigurationError(
                f"conformal() got unknown option(s) {unknown}",
                hint=f"its options are {sorted(_CONFORMAL_OPTIONS)}; see the docstring",
            )
        _check_round_options(
            rounds=None, round_deadline=round_deadline, seed=seed, max_rounds=1
        )
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
        _check_min_members(min_members, len(participants))
        options["features"] = self._pin_features(
            dataset,
            _check_features(options.get("features")),
            options.get("target"),
            participants,
        )
        if min_members is None:
            min_members = min(2, len(participants))
        with _spec_errors():
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

    def split_conformal(
        self,
        job: Job | str,
        *,
        calibration: str = "validation",
        dataset: str | None = None,
        bins: int = 1000,
        mondrian: bool = False,
        members: Sequence[str] | None = None,
        min_members: int | None = None,
        round_deadline: float = 120.0,
        key_bits: int = 2048,
        allow_insecure_keys: bool = False,
        features: Sequence[str] | None = None,
        target: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Calibrate a FedAvg job's model by split conformal across its members.

        One job of kind ``split_conformal``: this member rebuilds the FedAvg
        model, sends its parameters sealed to each participant, and each scores
        its calibration rows with it, counts the scores per bin and uploads the
        counts encrypted; only their sum is decrypted, here. Predictions are then
        made here, without sending any object. See docs/conformal.md.

        Parameters
        ----------
        job : Job or str
            A FedAvg job (or its id) that this member submitted or took part in;
            it is waited for.
        calibration : {"validation", "dataset"}, default="validation"
            ``"validation"``: the rows the FedAvg job held out at each member
            (it must have ``validation_fraction > 0``); ``"dataset"``: every row
            of ``dataset``, registered for calibration and never trained on.
        dataset : str, optional
            The calibration dataset (``calibration="dataset"``).
        bins : int, default=1000
            Equal bins of the score ``1 - p(y|x)`` over ``[0, 1]``: the
            threshold is at most ``1 / bins`` above the exact quantile.
        mondrian : bool, default=False
            One histogram per class, for coverage per class.
        members : sequence of str, optional
            Participants, among the FedAvg job's; default: all of them.
        min_members : int, optional
            Fewest histograms with which the calibration succeeds; default 2 (1
            with a single participant), so that the pooled histogram is never one
            member's unless only one takes part.
        round_deadline, key_bits, allow_insecure_keys
            As in :meth:`train`.
        features, target : optional
            Columns of the calibration dataset; default: the FedAvg job's.
        timeout : float, optional
            Seconds to wait for each job.

        Returns
        -------
        workbench.jobs.conformal.SplitConformalPredictor
            With ``predict_p``, ``predict_set``, ``evaluate`` and ``threshold``.
        """
        from workbench.jobs.conformal import calibrate_shared_model

        fedavg = self.job(job) if isinstance(job, str) else job
        _check_round_options(
            rounds=None, round_deadline=round_deadline, seed=0, max_rounds=1
        )
        if members is not None:
            self._check_members(members)
        participants = list(members or fedavg.spec.members or [])
        _check_min_members(min_members, len(participants))
        with _spec_errors():
            encryption = EncryptionSpec(
                key_bits=key_bits, allow_insecure_keys=allow_insecure_keys
            )
            return calibrate_shared_model(
                self,
                fedavg,
                calibration=calibration,
                dataset=dataset,
                bins=bins,
                mondrian=mondrian,
                members=members,
                min_members=min_members,
                round_deadline=round_deadline,
                encryption=encryption,
                features=features,
                target=target,
                timeout=timeout,
            )

    def stats(
        self,
        *,
        dataset: str,
        columns: Sequence[str],
        ranges: Mapping[str, tuple[float, float]],
        bins: int = 10,
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

        Each member's sums and bin counts are added under Paillier encryption;
        only the pooled figures are decrypted, here. Members refuse a job whose
        sums could hold fewer than two members other than the submitter.

        Parameters
        ----------
        dataset : str
            Dataset name, registered at every participant.
        columns : list of str
            Numeric columns to summarize (complete rows only).
        ranges : mapping of str to (float, float)
            Histogram range of every column. Required, and chosen without looking
            at the data: the ranges travel in the job spec, which the coordinator
            and every member read.
        bins : int, default=10
            Histogram bins per column, evenly spaced over its range (at most
            10 000).
        bounds : mapping of str to float, optional
            Clip bound of a column's values around the middle of its range;
            default: five times the range's width (see :mod:`workbench.jobs.stats`).
            The result counts the values that were clipped.
        members : list of str, optional
            Participants; default as in :meth:`train`.
        min_members : int, optional
            Fewest members whose sums are added; default: all participants.
        min_rows : int, default=5
            A member with fewer complete rows refuses (members never accept
            fewer than 5).
        round_deadline, key_bits, allow_insecure_keys
            As in :meth:`train`.
        timeout : float, optional
            Seconds to wait for the result.

        Returns
        -------
        workbench.jobs.stats.StatsResult
            ``summary`` (count, mean, std and clipped per column) and
            ``histograms`` (low, high, count per bin and column).

        Raises
        ------
        JobSpecError
            If an argument is invalid, or the job could disclose one member's sums.
        """
        import math

        from workbench.jobs.stats import MAX_BINS, stats_spec, summarize

        if isinstance(columns, str) or not isinstance(columns, Sequence):
            raise JobSpecError(
                f"columns must be a list of column names, got {columns!r}",
                hint=f"pass columns=[{columns!r}]"
                if isinstance(columns, str)
                else "pass columns=['age', ...]",
            )
        names = [str(c) for c in columns]
        if (
            isinstance(bins, bool)
            or not isinstance(bins, int)
            or not (1 <= bins <= MAX_BINS)
        ):
            raise JobSpecError(
                f"bins must be an integer from 1 to {MAX_BINS}, got {bins!r}",
                hint="pass bins=10, say",
            )
        if not isinstance(ranges, Mapping):
            raise JobSpecError(
                f"ranges must map each column to (low, high), got {ranges!r}",
                hint="pass ranges={'age': (0, 100)}",
            )
        edges = []
        for name in names:
            if name not in ranges:
                raise JobSpecError(
                    f"ranges gives no (low, high) for column {name!r}",
                    hint="give every column a range chosen without looking at the "
                    "data (it travels in the job spec)",
                )
            pair = ranges[name]
            try:
                low, high = (float(v) for v in pair)
            except (TypeError, ValueError) as exc:
                raise JobSpecError(
                    f"the range of column {name!r} must be two numbers (low, "
                    f"high), got {pair!r}",
                    hint="pass ranges={column: (low, high)}",
                ) from exc
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise JobSpecError(
                    f"the range of column {name!r} must be finite with low < high, "
                    f"got ({low}, {high})",
                    hint="pass ranges={column: (low, high)}",
                )
            edges.append([low + (high - low) * i / bins for i in range(bins)] + [high])
        limits = None
        if bounds is not None:
            if not isinstance(bounds, Mapping) or set(bounds) - set(names):
                raise JobSpecError(
                    f"bounds must map some of the columns {names} to positive "
                    f"numbers, got {bounds!r}",
                    hint="leave bounds out to use the default",
                )
            limits = []
            for name, row in zip(names, edges, strict=True):
                value = bounds.get(name, 5.0 * (row[-1] - row[0]))
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not math.isfinite(value)
                    or value <= 0
                ):
                    raise JobSpecError(
                        f"the bound of column {name!r} must be a positive number, "
                        f"got {value!r}",
                        hint="pass a bound above the spread of the values",
                    )
                limits.append(float(value))
        _check_round_options(
            rounds=None, round_deadline=round_deadline, seed=0, max_rounds=1
        )
        participants = self._participants(dataset, members)
        _check_min_members(min_members, len(participants))
        summed = len(participants) if min_members is None else int(min_members)
        others = summed - (1 if self.member in participants else 0)
        if others < 2:
            raise JobSpecError(
                f"a stats job must add the sums of at least two members besides the "
                f"submitter; min_members={summed} with participants {participants} "
                f"allows {others}",
                hint="add members, or raise min_members",
            )
        with _spec_errors():
            spec = stats_spec(
                dataset=dataset,
                columns=names,
                edges=edges,
                members=participants,
                bounds=limits,
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
        if isinstance(spec, Mapping):
            spec = parse_spec(dict(spec))
        elif not isinstance(spec, JobSpec):
            raise ConfigurationError(
                f"submit() needs a JobSpec or a dict of its fields, got a "
                f"{type(spec).__name__}",
                hint="build one with workbench.jobs.fedavg.fedavg_spec(...), or use "
                "train() or conformal()",
            )
        if spec.members is None:
            spec = spec.model_copy(
                update={"members": self._participants(spec.dataset, None)}
            )
        else:
            self._check_members(spec.members)
        if spec.features is None and spec.kind in _PINNED_KINDS:
            pinned = self._pin_features(
                spec.dataset, None, spec.target, spec.members or []
            )
            if pinned is not None:
                spec = spec.model_copy(update={"features": pinned})
        kind = get_job_kind(spec.kind)
        if kind.check_options is not None:
            with _spec_errors():
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
            return self._check_members(members)
        listed = self.members()
        others = [m for m in listed if m["name"] != self.member]
        chosen = [
            m["name"]
            for m in others
            if any(d.get("name") == dataset for d in m.get("datasets", []))
        ]
        if not chosen:
            chosen = [m["name"] for m in others]
            if chosen:
                logger.warning(
                    "no other member published a dataset %r; asking every member "
                    "(%d): pass members=[...] to choose",
                    dataset,
                    len(chosen),
                )
        if dataset in self.datasets:
            chosen.append(self.member)
        if not chosen:
            raise JobSpecError(
                f"the federation {self.name!r} has no other member to take part",
                hint="invite members first, or register the dataset here",
            )
        return chosen

    def _pin_features(
        self,
        dataset: str,
        features: list[str] | None,
        target: str | None,
        participants: Sequence[str],
    ) -> list[str] | None:
        # The feature names a job's columns are matched by, at every member and in
        # the model: given, else this member's registered ones, else the columns
        # every participant published alike (without the target). None: by
        # position at each member.
        if features is not None:
            return features
        if dataset in self.datasets:
            local = self.datasets.get(dataset)
            if target is None or target == local.target:
                return local.features
            return [c for c in map(str, local.frame.columns) if c != target]
        if not participants:
            return None
        schemas: dict[str, dict[str, str]] = {}
        for member in self.members():
            for published in member.get("datasets", []):
                if published.get("name") == dataset and published.get("schema"):
                    schemas[member["name"]] = dict(published["schema"])
        found = [schemas.get(name) for name in participants]
        first = found[0]
        if first is None or any(schema != first for schema in found):
            return None
        read = published_features(first)
        if read is None or (target is not None and target != read[1]):
            return None
        return read[0]

    def _check_members(self, members: object) -> list[str]:
        if isinstance(members, str) or not isinstance(members, Sequence):
            raise JobSpecError(
                f"members must be a list of member names, got {members!r}",
                hint=f"pass members=[{members!r}] for a single member"
                if isinstance(members, str)
                else "pass members=['hospital-a', 'hospital-b']",
            )
        chosen = list(members)
        if not chosen:
            raise JobSpecError(
                "members=[] names no member to take part",
                hint="name at least one member, or leave members out to ask every "
                "member",
            )
        known = [m["name"] for m in self.members()]
        unknown = [n for n in chosen if n not in known]
        if unknown:
            raise JobSpecError(
                f"members names {unknown!r}, not members of {self.name!r}",
                hint=f"its members are {known}",
            )
        if len(set(chosen)) != len(chosen):
            raise JobSpecError(
                f"members lists a name twice: {chosen}",
                hint="name each member once",
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
            last = None if table.empty else table.iloc[-1].to_dict()
            status["metrics"] = last  # type: ignore[assignment]
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
        redraw = _is_tty(out)
        shown: tuple[int, str] | None = None
        started = time.monotonic()
        status = self.federation.client.job(self.id)
        while True:
            self._status = status
            if on_round is not None:
                on_round(status)
            if progress:
                shown = _draw(out, status, time.monotonic() - started, redraw, shown)
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
        if progress and redraw:
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


_MAX_ROUNDS = 10_000
_MAX_DEADLINE = 7 * 24 * 3600.0
_MAX_SEED = 2**32 - 1
_CONFORMAL_OPTIONS = (
    "smoothing",
    "calibration_size",
    "bits",
    "features",
    "target",
    "timeout",
)


_PINNED_KINDS = ("fedavg", "conformal")


def _check_features(features: object) -> list[str] | None:
    if features is None:
        return None
    if (
        isinstance(features, str)
        or not isinstance(features, Sequence)
        or not features
        or not all(isinstance(f, str) and f for f in features)
    ):
        raise JobSpecError(
            f"features must be a non-empty list of column names, got {features!r}",
            hint=f"pass features=[{features!r}] for a single column"
            if isinstance(features, str)
            else "pass features=['age', 'weight'], or leave it out",
        )
    return list(features)


def _is_int(value: object) -> TypeGuard[numbers.Integral]:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_round_options(
    *, rounds: object, round_deadline: object, seed: object, max_rounds: int
) -> None:
    if rounds is not None and (
        not _is_int(rounds) or not 1 <= int(rounds) <= max_rounds
    ):
        raise JobSpecError(
            f"rounds must be at least 1, got {rounds!r}"
            if _is_int(rounds) and int(rounds) < 1
            else f"rounds must be a whole number from 1 to {max_rounds}, got "
            f"{rounds!r}",
            hint=f"pass rounds=10, for example; at most {max_rounds}",
        )
    if (
        not isinstance(round_deadline, numbers.Real)
        or isinstance(round_deadline, bool)
        or not math.isfinite(float(round_deadline))
        or not 0 < float(round_deadline) <= _MAX_DEADLINE
    ):
        raise JobSpecError(
            f"round_deadline must be a number of seconds above 0 and at most "
            f"{_MAX_DEADLINE:g} (a week), got {round_deadline!r}",
            hint="pass round_deadline=120.0, for example",
        )
    if not _is_int(seed) or not 0 <= int(seed) <= _MAX_SEED:
        raise JobSpecError(
            f"seed must be a whole number from 0 to {_MAX_SEED}, got {seed!r}",
            hint="pass seed=0, for example",
        )


def _check_min_members(min_members: object, participants: int) -> None:
    if min_members is None:
        return
    if not _is_int(min_members) or not 1 <= int(min_members) <= participants:
        raise JobSpecError(
            f"min_members must be a whole number from 1 to the {participants} "
            f"participant(s), got {min_members!r}",
            hint="leave it out to wait for every participant",
        )


class _spec_errors:  # noqa: N801 - used as a context manager, like a function
    """Turn pydantic's ValidationError into a JobSpecError naming each parameter."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, trace: object) -> None:
        if isinstance(exc, ValidationError):
            raise JobSpecError(
                f"invalid job options: {_describe_validation(exc)}",
                hint="fix the named parameter; see the function's docstring",
            ) from exc


def _describe_validation(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "spec"
        message = str(error["msg"]).removeprefix("Value error, ")
        if where == "spec":
            parts.append(message)
        else:
            parts.append(f"{where}={error.get('input')!r}: {message}")
    return "; ".join(parts)


def _is_tty(out: TextIO) -> bool:
    try:
        return bool(out.isatty())
    except (AttributeError, ValueError):
        return False


def _draw(
    out: TextIO,
    status: dict[str, Any],
    elapsed: float,
    redraw: bool,
    shown: tuple[int, str] | None,
) -> tuple[int, str]:
    # On a terminal one bar redrawn in place; elsewhere (a log file, a pipe, a
    # notebook's captured stream) one line whenever a round closes or the state
    # changes.
    total = int(status["total_rounds"])
    done = sum(1 for r in status["rounds"] if r["state"] == "closed")
    now = (done, str(status["state"]))
    if redraw:
        width = 30
        filled = int(width * done / max(total, 1))
        bar = "#" * filled + "-" * (width - filled)
        out.write(
            f"\rjob {status['id'][:8]} [{bar}] round {done}/{total} "
            f"{status['state']} {elapsed:5.1f}s"
        )
    elif now != shown:
        out.write(
            f"job {status['id'][:8]} round {done}/{total} {status['state']} "
            f"{elapsed:.1f}s\n"
        )
    out.flush()
    return now
