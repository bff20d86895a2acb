"""Job specs: what a member submits, as declarative data.

A :class:`JobSpec` names a job kind, a dataset every participant holds under the
same name, a model from the registry of known estimators, the number of rounds and
the encryption settings. Nothing in a spec is code: every field is a plain value,
validated strictly (unknown fields are errors), so a data owner can read what a job
will do before its member agent runs it.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from workbench.errors import JobSpecError, WorkbenchError
from workbench.names import validate_name

__all__ = ["JOB_KINDS", "EncryptionSpec", "JobSpec", "parse_spec"]

JOB_KINDS = ("fedavg", "stats", "conformal", "split_conformal")

Scalar = str | int | float | bool | None
OptionValue = Scalar | list[Scalar] | list[list[Scalar]] | dict[str, Scalar]


class EncryptionSpec(BaseModel):
    """How the job's updates are encrypted and packed.

    Parameters
    ----------
    key_bits : int, default=2048
        Size of the job's Paillier modulus: 2048 or 3072. 512 and 1024 are accepted
        only with ``allow_insecure_keys=True``, for tests.
    bits : int, default=16
        Quantization bits per value.
    clip : float, default=16.0
        Values are clipped to ``[-clip, clip]`` before quantization.
    max_weight : int, default=100_000
        Largest per-member weight (for FedAvg: the member's training sample count).
    allow_insecure_keys : bool, default=False
        Allow key sizes below 2048 bits. Only for tests.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    key_bits: int = 2048
    bits: int = Field(default=16, ge=2, le=48)
    clip: float = Field(default=16.0, gt=0.0, le=1e12)
    max_weight: int = Field(default=100_000, ge=1, le=10**9)
    allow_insecure_keys: bool = False

    @model_validator(mode="after")
    def _check_key_bits(self) -> EncryptionSpec:
        secure = (2048, 3072)
        insecure = (512, 1024)
        if self.key_bits in secure:
            return self
        if self.key_bits in insecure and self.allow_insecure_keys:
            return self
        if self.key_bits in insecure:
            raise ValueError(
                f"key_bits={self.key_bits} is too small for real use; choose 2048 or "
                "3072, or set allow_insecure_keys=True in tests"
            )
        raise ValueError(f"key_bits must be 2048 or 3072, got {self.key_bits}")


class JobSpec(BaseModel):
    """A declarative description of a federated job.

    Parameters
    ----------
    kind : {"fedavg", "stats", "conformal", "split_conformal"}
        What the job computes; each kind is one module of :mod:`workbench.jobs`.
    dataset : str
        Name under which every participant registered its local dataset.
    target : str or None, default=None
        Target column; ``None`` uses the one given when the dataset was registered.
    features : list of str or None, default=None
        Feature columns; ``None`` uses the registered ones.
    model : str or None, default=None
        Name of an estimator in :mod:`workbench.models`.
    model_params : dict, default={}
        Hyperparameters of the model, checked against the registry's allowed names.
    rounds : int
        Number of rounds the coordinator runs, counted from 1.
    min_members : int, default=1
        Fewest updates with which a round may close at its deadline.
    round_deadline : float, default=120.0
        Seconds a round stays open waiting for updates.
    seed : int, default=0
        Seed of every random choice made by members, so that a job is reproducible.
    members : list of str or None, default=None
        Participating members; ``None`` lets the submitter fill in every member.
    encryption : EncryptionSpec
        Key size and packing settings.
    options : dict, default={}
        Kind-specific options, checked by the kind's module.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: Literal["fedavg", "stats", "conformal", "split_conformal"]
    dataset: str = Field(min_length=1, max_length=64)
    target: str | None = None
    features: list[str] | None = None
    model: str | None = None
    model_params: dict[str, Scalar] = Field(default_factory=dict)
    rounds: int = Field(ge=1, le=10_000)
    min_members: int = Field(default=1, ge=1)
    round_deadline: float = Field(default=120.0, gt=0.0, le=7 * 24 * 3600.0)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    members: list[str] | None = None
    encryption: EncryptionSpec = Field(default_factory=EncryptionSpec)
    options: dict[str, OptionValue] = Field(default_factory=dict)

    @field_validator("dataset")
    @classmethod
    def _check_dataset(cls, value: str) -> str:
        try:
            return validate_name("dataset", value)
        except WorkbenchError as exc:
            raise ValueError(exc.message) from exc

    @model_validator(mode="after")
    def _check_members(self) -> JobSpec:
        if self.members is not None:
            if len(set(self.members)) != len(self.members):
                raise ValueError(f"members lists a name twice: {self.members}")
            if self.min_members > len(self.members):
                raise ValueError(
                    f"min_members={self.min_members} is more than the "
                    f"{len(self.members)} members listed"
                )
        return self

    def to_json(self) -> str:
        """Return the spec as canonical JSON (sorted keys)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


def parse_spec(data: str | bytes | dict[str, Any]) -> JobSpec:
    """Validate a job spec given as JSON text or a dict.

    Parameters
    ----------
    data : str, bytes or dict
        The spec.

    Returns
    -------
    JobSpec
        The validated spec.

    Raises
    ------
    JobSpecError
        If a field is missing, unknown or has a bad value (NaN or an infinity
        anywhere included); the message names it.
    """
    if not isinstance(data, dict):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise JobSpecError(
                f"the job spec is not valid JSON: {exc}",
                hint="send the spec as a JSON object",
            ) from exc
        if not isinstance(data, dict):
            raise JobSpecError(
                f"the job spec must be a JSON object, got {type(data).__name__}",
                hint="send the spec as a JSON object",
            )
    where = _non_finite(data, "spec")
    if where is not None:
        raise JobSpecError(
            f"the job spec holds a non-finite number (NaN or an infinity) at {where}",
            hint="every number in a spec must be finite; fix the named field",
        )
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise JobSpecError(
            f"the job spec is invalid: {_describe(exc)}",
            hint="fix the named field; see docs/protocol.md for every field",
        ) from exc


def _non_finite(value: Any, where: str) -> str | None:
    """The path of the first NaN or infinity inside ``value``, or ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    if isinstance(value, dict):
        for key, item in value.items():
            found = _non_finite(item, f"{where}.{key}")
            if found is not None:
                return found
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _non_finite(item, f"{where}[{index}]")
            if found is not None:
                return found
    return None


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "spec"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
