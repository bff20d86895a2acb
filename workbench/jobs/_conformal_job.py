"""The conformal job kind: members answer a query with p-values over the coordinator.

A conformal job is one query and has one round:

1. The querier (the job's submitter) submits the spec and sends the query objects
   as a plaintext ``.npy`` blob named ``query`` in round 1. The coordinator stores
   and relays it: the objects are disclosed to the coordinator and to every
   participant, and the spec says so (``options.disclose_query_objects`` must be
   true, so that a data owner approving the job sees it).
2. Each participant trains a model on its registered dataset and calibrates an
   inductive conformal predictor on a held-out part of it (seeded by the job's seed
   and the member's name), computes its p-values for the query objects and answers:

   * under ``mean``, ``weighted_mean`` and ``twice_mean``, with its encrypted
     reply (:func:`~workbench.jobs.conformal.encrypt_reply`); the coordinator only
     adds the replies, and the querier decrypts the sum;
   * under ``median``, with its p-values, mask and calibration size sealed to the
     querier's X25519 key as a blob named ``p_values``, relayed opaque by the
     coordinator, and with an encrypted vector of its mask as its update, which
     closes the round.

A member whose local work fails reports the failure; the round closes with the
others (``min_members`` of them at least), and the querier reports the failure.

Options (``spec.options``): ``task`` (``"classification"`` or ``"regression"``),
``rule``, ``classes`` (classification), ``candidates`` (regression, an increasing
grid of target values), ``confidence`` (members abstain on columns with too few
calibration examples for it; ``None``: only on columns with none),
``mondrian``, ``smoothing``, ``calibration_size``, ``bits`` (quantization bits of
p-values), ``n_objects`` and ``n_features`` (the shape of the query) and
``disclose_query_objects`` (must be true).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.svm import SVR

from workbench.crypto import EncryptedVector, PackedEncoding, encrypt_vector
from workbench.errors import DatasetError, JobSpecError
from workbench.jobs import JobContext, register_job_kind
from workbench.jobs._conformal_combine import (
    DEFAULT_BITS,
    ENCRYPTED_RULES,
    RULES,
    MemberReply,
    encrypt_reply,
    reply_encoding,
)
from workbench.jobs._conformal_core import ConformalClassifier, ConformalRegressor
from workbench.jobs._conformal_federated import member_reply
from workbench.jobs.spec import EncryptionSpec, JobSpec
from workbench.wire import decode_array, decode_bundle, encode_array, encode_bundle

logger = logging.getLogger(__name__)

__all__ = [
    "CONFORMAL_MODELS",
    "MASK_VECTOR",
    "P_VALUES_BLOB",
    "QUERY_BLOB",
    "REPLY_VECTOR",
    "ConformalOptions",
    "ConformalRunner",
    "build_estimator",
    "check_options",
    "conformal_spec",
    "decode_sealed_reply",
    "encode_sealed_reply",
    "member_random_state",
    "member_predictor",
    "presence_encoding",
]

QUERY_BLOB = "query"
"""Name of the round-1 blob that carries the query objects (plaintext ``.npy``)."""

P_VALUES_BLOB = "p_values"
"""Name of the blob a member seals to the querier under the ``median`` rule."""

REPLY_VECTOR = "reply"
"""Name of the encrypted vector of a member's update under the encrypted rules."""

MASK_VECTOR = "mask"
"""Name of the encrypted vector of a member's update under ``median``."""

TASKS = ("classification", "regression")

_Types = type | tuple[type, ...]
_FOREST: dict[str, _Types] = {
    "n_estimators": int,
    "max_depth": (int, type(None)),
    "min_samples_leaf": int,
    "max_features": (str, int, float, type(None)),
}
CONFORMAL_MODELS: dict[str, dict[str, dict[str, _Types]]] = {
    "classification": {
        "random_forest": _FOREST,
        "logistic_regression": {},
        "sgd_classifier": {},
    },
    "regression": {
        "random_forest": _FOREST,
        "svr": {"C": float, "epsilon": float, "gamma": (str, float)},
    },
}
"""Models a conformal job may name, by task, with the hyperparameters it may set.

``logistic_regression`` and ``sgd_classifier`` come from :mod:`workbench.models`,
which checks their hyperparameters itself.
"""


@dataclass(frozen=True)
class ConformalOptions:
    """The kind-specific options of a conformal job, checked."""

    task: str
    rule: str
    classes: list[Any] | None
    candidates: list[float] | None
    confidence: float | None
    mondrian: bool
    smoothing: bool
    calibration_size: float
    bits: int
    n_objects: int
    n_features: int

    @property
    def n_columns(self) -> int:
        """Columns of a reply: classes, or candidate target values."""
        columns = self.classes if self.task == "classification" else self.candidates
        return len(columns or [])

    @classmethod
    def from_spec(cls, spec: JobSpec) -> ConformalOptions:
        """Read and check ``spec.options`` (and the spec's model and rounds).

        Raises
        ------
        JobSpecError
            If an option is unknown, missing or has a bad value.
        """
        options = dict(spec.options)
        known = {
            "task",
            "rule",
            "classes",
            "candidates",
            "confidence",
            "mondrian",
            "smoothing",
            "calibration_size",
            "bits",
            "n_objects",
            "n_features",
            "disclose_query_objects",
        }
        unknown = sorted(set(options) - known)
        if unknown:
            raise JobSpecError(
                f"a conformal job takes no options {unknown}",
                hint=f"its options are {', '.join(sorted(known))}",
            )
        if options.get("disclose_query_objects") is not True:
            raise JobSpecError(
                "a conformal job sends the query objects in plaintext to the "
                "coordinator and to every member, and its spec must say so; "
                f"disclose_query_objects is {options.get('disclose_query_objects')!r}",
                hint="set options.disclose_query_objects=true (conformal_spec does)",
            )
        if spec.rounds != 1:
            raise JobSpecError(
                f"a conformal job answers one query in one round; rounds={spec.rounds}",
                hint="submit one job per query with rounds=1",
            )
        task = options.get("task", "classification")
        if task not in TASKS:
            raise JobSpecError(
                f"task must be one of {', '.join(TASKS)}; received {task!r}",
                hint="use task='classification' or task='regression'",
            )
        rule = options.get("rule", "mean")
        if rule not in RULES:
            raise JobSpecError(
                f"rule must be one of {', '.join(RULES)}; received {rule!r}",
                hint="use rule='mean' to average p-values under encryption",
            )
        classes, candidates = _columns(task, options)
        confidence = options.get("confidence")
        if confidence is not None and (
            isinstance(confidence, bool)
            or not isinstance(confidence, int | float)
            or not 0.0 < float(confidence) < 1.0
        ):
            raise JobSpecError(
                f"confidence must be a number in (0, 1) or null; received "
                f"{confidence!r}",
                hint="for example confidence=0.9",
            )
        calibration_size = options.get("calibration_size", 0.3)
        if (
            isinstance(calibration_size, bool)
            or not isinstance(calibration_size, int | float)
            or not 0.0 < float(calibration_size) < 1.0
        ):
            raise JobSpecError(
                f"calibration_size must lie in (0, 1); received {calibration_size!r}",
                hint="for example calibration_size=0.3",
            )
        bits = options.get("bits", DEFAULT_BITS)
        if isinstance(bits, bool) or not isinstance(bits, int) or not 8 <= bits <= 40:
            raise JobSpecError(
                f"bits must be an integer from 8 to 40; received {bits!r}",
                hint=f"the default is {DEFAULT_BITS}",
            )
        shape = [options.get("n_objects"), options.get("n_features")]
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape):
            raise JobSpecError(
                f"n_objects and n_features must be positive integers (the shape of "
                f"the query); received {shape}",
                hint="build the spec with conformal_spec(), which sets them",
            )
        for name in ("mondrian", "smoothing"):
            if not isinstance(options.get(name, False), bool):
                raise JobSpecError(
                    f"{name} must be true or false; received {options[name]!r}"
                )
        _check_model(spec, task)
        return cls(
            task=task,
            rule=rule,
            classes=classes,
            candidates=candidates,
            confidence=None if confidence is None else float(confidence),
            mondrian=bool(options.get("mondrian", False)),
            smoothing=bool(options.get("smoothing", True)),
            calibration_size=float(calibration_size),
            bits=bits,
            n_objects=int(shape[0]),  # type: ignore[arg-type]
            n_features=int(shape[1]),  # type: ignore[arg-type]
        )


def _columns(
    task: str, options: Mapping[str, Any]
) -> tuple[list[Any] | None, list[float] | None]:
    if task == "classification":
        classes = options.get("classes")
        if options.get("candidates") is not None:
            raise JobSpecError(
                "candidates belong to regression jobs, not classification",
                hint="leave candidates out, or set task='regression'",
            )
        if not isinstance(classes, list) or len(set(map(repr, classes))) < 2:
            raise JobSpecError(
                f"a conformal classification job needs classes=[...], at least 2 "
                f"distinct labels; received {classes!r}",
                hint="list every label of the target, the same at every member",
            )
        if len(set(map(repr, classes))) != len(classes):
            raise JobSpecError(f"classes lists a label twice: {classes!r}")
        return list(classes), None
    candidates = options.get("candidates")
    if options.get("classes") is not None or options.get("mondrian"):
        raise JobSpecError(
            "classes and mondrian belong to classification jobs, not regression",
            hint="leave them out, or set task='classification'",
        )
    grid = np.asarray(candidates if isinstance(candidates, list) else [], dtype=float)
    if grid.size < 3 or not np.all(np.isfinite(grid)) or np.any(np.diff(grid) <= 0):
        raise JobSpecError(
            f"a conformal regression job needs candidates=[...], an increasing grid "
            f"of at least 3 finite target values; received "
            f"{str(candidates)[:80]}",
            hint="for example candidates=numpy.linspace(low, high, 200).tolist()",
        )
    return None, grid.tolist()


def _check_model(spec: JobSpec, task: str) -> None:
    name = spec.model or "random_forest"
    models = CONFORMAL_MODELS[task]
    if name not in models:
        raise JobSpecError(
            f"a conformal {task} job cannot use the model {name!r}",
            hint=f"models for {task}: {', '.join(sorted(models))}",
        )
    allowed = models[name]
    if name in ("logistic_regression", "sgd_classifier"):
        from workbench.models import get_model

        get_model(name).build(spec.model_params, random_state=0)
        return
    for key, value in spec.model_params.items():
        if key not in allowed:
            raise JobSpecError(
                f"{name} takes no hyperparameter {key!r} in a conformal job",
                hint=f"allowed: {', '.join(sorted(allowed))}",
            )
        kinds = allowed[key]
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise JobSpecError(
                f"{name}: {key}={value!r} has the wrong type",
                hint=f"give a {kinds}",
            )


def check_options(spec: JobSpec) -> None:
    """Raise :class:`~workbench.errors.JobSpecError` if the conformal spec is wrong."""
    ConformalOptions.from_spec(spec)


def conformal_spec(
    *,
    dataset: str,
    n_objects: int,
    n_features: int,
    task: str = "classification",
    rule: str = "mean",
    classes: Sequence[Any] | None = None,
    candidates: Sequence[float] | None = None,
    confidence: float | None = None,
    mondrian: bool = False,
    smoothing: bool = True,
    calibration_size: float = 0.3,
    model: str | None = None,
    model_params: Mapping[str, Any] | None = None,
    members: Sequence[str] | None = None,
    min_members: int = 1,
    features: Sequence[str] | None = None,
    target: str | None = None,
    round_deadline: float = 120.0,
    seed: int = 0,
    bits: int = DEFAULT_BITS,
    encryption: EncryptionSpec | None = None,
) -> JobSpec:
    """Build the spec of one conformal query.

    Parameters
    ----------
    dataset : str
        Dataset name registered at every participant.
    n_objects, n_features : int
        Shape of the query objects the querier will send.
    task : {"classification", "regression"}, default="classification"
    rule : {"mean", "weighted_mean", "median", "twice_mean"}, default="mean"
    classes : sequence, optional
        Every label of the target (classification).
    candidates : sequence of float, optional
        Increasing grid of target values (regression).
    confidence : float, optional
        Members abstain on columns with too few calibration examples for it.
    mondrian, smoothing : bool
        Class-conditional calibration; smoothed p-values.
    calibration_size : float, default=0.3
        Share of each member's rows held out for calibration.
    model : str, optional
        One of :data:`CONFORMAL_MODELS` for the task; a random forest by default.
    model_params : mapping, optional
    members : sequence of str, optional
        Participants; ``None`` lets the submitter fill them in.
    min_members : int, default=1
        Fewest replies with which the query succeeds.
    features, target : optional
        Columns, if they differ from the registered ones.
    round_deadline : float, default=120.0
    seed : int, default=0
    bits : int, default=20
        Quantization bits of p-values under Paillier.
    encryption : EncryptionSpec, optional

    Returns
    -------
    JobSpec
        With ``options.disclose_query_objects = True``: the spec states that the
        query objects reach the coordinator and every participant.
    """
    options: dict[str, Any] = {
        "task": task,
        "rule": rule,
        "confidence": confidence,
        "smoothing": smoothing,
        "calibration_size": calibration_size,
        "bits": bits,
        "n_objects": int(n_objects),
        "n_features": int(n_features),
        "disclose_query_objects": True,
    }
    if task == "classification":
        options["classes"] = [_plain(c) for c in classes or []]
        options["mondrian"] = mondrian
    else:
        options["candidates"] = [float(c) for c in candidates or []]
    spec = JobSpec(
        kind="conformal",
        dataset=dataset,
        target=target,
        features=None if features is None else list(features),
        model=model,
        model_params=dict(model_params or {}),
        rounds=1,
        min_members=min_members,
        round_deadline=round_deadline,
        seed=seed,
        members=None if members is None else list(members),
        encryption=encryption or EncryptionSpec(),
        options=options,
    )
    check_options(spec)
    return spec


def member_random_state(spec: JobSpec, member: str) -> int:
    """The seed of ``member``'s split, model and tie-breaks in a conformal job."""
    text = f"{spec.seed}:{member}:conformal".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "big")


def build_estimator(spec: JobSpec, random_state: int) -> Any:
    """The unfitted model a member trains, from the spec's model and parameters."""
    options = ConformalOptions.from_spec(spec)
    name = spec.model or "random_forest"
    params = dict(spec.model_params)
    if name in ("logistic_regression", "sgd_classifier"):
        from workbench.models import get_model

        return get_model(name).build(params, random_state=random_state)
    if name == "svr":
        return SVR(**params)
    forest = {"n_estimators": 100, "n_jobs": 1, **params}
    if options.task == "classification":
        return RandomForestClassifier(random_state=random_state, **forest)
    return RandomForestRegressor(random_state=random_state, **forest)


def member_predictor(
    spec: JobSpec, member: str, X: NDArray[Any], y: NDArray[Any]
) -> ConformalClassifier | ConformalRegressor:
    """Train and calibrate ``member``'s predictor on its rows, as the job does.

    The same call in any process with the same spec, name and rows gives the same
    predictor, so that a job's answer can be reproduced in-process.
    """
    options = ConformalOptions.from_spec(spec)
    seed = member_random_state(spec, member)
    estimator = build_estimator(spec, seed)
    if options.task == "classification":
        return ConformalClassifier(
            estimator,
            mondrian=options.mondrian,
            smoothing=options.smoothing,
            calibration_size=options.calibration_size,
            classes=np.asarray(options.classes),
            random_state=seed,
        ).fit(X, y)
    return ConformalRegressor(
        estimator, calibration_size=options.calibration_size, random_state=seed
    ).fit(X, np.asarray(y, dtype=np.float64))


def presence_encoding(participants: int) -> PackedEncoding:
    """Encoding of the mask vector a member uploads under ``median``."""
    return PackedEncoding(clip=1.0, bits=2, max_contributions=max(participants, 1))


def encode_sealed_reply(reply: MemberReply) -> bytes:
    """A member's reply as bytes (a bundle of ``.npy`` arrays), before sealing."""
    return encode_bundle(
        {
            "p_values": encode_array(reply.p_values),
            "mask": encode_array(reply.mask),
            "calibration_size": encode_array(
                np.array([reply.calibration_size], dtype=np.int64)
            ),
        }
    )


def decode_sealed_reply(data: bytes, shape: tuple[int, int]) -> MemberReply:
    """Read a reply written by :func:`encode_sealed_reply` (no pickle is read).

    Raises
    ------
    ConformalError
        If its arrays do not have the query's shape.
    """
    from workbench.errors import ConformalError

    entries = decode_bundle(data)
    missing = sorted({"p_values", "mask", "calibration_size"} - set(entries))
    if missing:
        raise ConformalError(
            f"a sealed reply lacks the entries {missing}",
            hint="the member runs another version of workbench; update it",
        )
    p_values = decode_array(entries["p_values"]).astype(np.float64)
    if p_values.shape != shape:
        raise ConformalError(
            f"a sealed reply holds p-values of shape {p_values.shape}; the query "
            f"has shape {shape}",
            hint="the member answered another query; query again",
        )
    return MemberReply(
        p_values=p_values,
        mask=decode_array(entries["mask"]).astype(bool),
        calibration_size=int(decode_array(entries["calibration_size"]).reshape(-1)[0]),
    )


class ConformalRunner:
    """A member's side of a conformal job.

    Parameters
    ----------
    spec : JobSpec
        The job's spec; its options are checked here.
    """

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.options = ConformalOptions.from_spec(spec)

    def run_round(self, context: JobContext, round: int) -> None:
        """Answer the query of ``round``: an encrypted reply, or a sealed one."""
        options = self.options
        X_query = self._query(context, round)
        X, y = context.dataset().xy(self.spec.features, self.spec.target)
        X = np.asarray(X, dtype=np.float64)
        if X.shape[1] != options.n_features:
            raise DatasetError(
                f"the dataset has {X.shape[1]} feature columns; the query objects "
                f"have {options.n_features}",
                hint="name the job's features=[...] so every member uses the same",
            )
        predictor = member_predictor(self.spec, context.member, X, np.asarray(y))
        reply = member_reply(
            predictor,
            X_query,
            confidence=options.confidence,
            rule=options.rule,
            candidates=None if options.candidates is None else options.candidates,
        )
        if reply.calibration_size > self.spec.encryption.max_weight:
            raise DatasetError(
                f"{reply.calibration_size} calibration examples exceed the job's "
                f"max_weight={self.spec.encryption.max_weight}",
                hint="submit the job with a larger encryption.max_weight",
            )
        participants = len(context.participants)
        if options.rule in ENCRYPTED_RULES:
            encoding = reply_encoding(
                options.rule,
                max_members=participants,
                max_calibration_size=self.spec.encryption.max_weight,
                bits=options.bits,
            )
            vectors = {
                REPLY_VECTOR: encrypt_reply(
                    context.public_key,
                    reply,
                    rule=options.rule,
                    encoding=encoding,
                    private_key=context.private_key,
                )
            }
        else:
            sealed = context.seal_for(context.submitter, encode_sealed_reply(reply))
            context.put_blob(round, P_VALUES_BLOB, sealed, recipient=context.submitter)
            vectors = {MASK_VECTOR: self._mask_vector(context, reply, participants)}
        context.upload(round, vectors)
        logger.info(
            "job %s round %d: conformal reply uploaded (%s)",
            context.job_id,
            round,
            options.rule,
        )

    def _query(self, context: JobContext, round: int) -> NDArray[np.float64]:
        raw = context.get_blob(round, QUERY_BLOB, sender=context.submitter)
        array = decode_array(raw)
        shape = (self.options.n_objects, self.options.n_features)
        if array.shape != shape or not np.issubdtype(array.dtype, np.number):
            raise DatasetError(
                f"the query objects have shape {array.shape} and dtype {array.dtype}; "
                f"the spec declares a numeric {shape}",
                hint="the querier must send the objects the spec describes",
            )
        X_query = array.astype(np.float64)
        if not np.all(np.isfinite(X_query)):
            raise DatasetError(
                "the query objects hold NaN or infinite values",
                hint="the querier must send finite feature values",
            )
        return X_query

    def _mask_vector(
        self, context: JobContext, reply: MemberReply, participants: int
    ) -> EncryptedVector:
        return encrypt_vector(
            context.public_key,
            2.0 * reply.mask.astype(np.float64) - 1.0,
            presence_encoding(participants),
            private_key=context.private_key,
        )


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


register_job_kind("conformal", ConformalRunner, check_options=check_options)
