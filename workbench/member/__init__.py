"""The member side: local datasets, the credential file and the agent loop."""

from __future__ import annotations

from workbench.member.agent import MemberAgent, MemberContext
from workbench.member.credentials import Credential
from workbench.member.datasets import DatasetRegistry, LocalDataset

__all__ = [
    "Credential",
    "DatasetRegistry",
    "LocalDataset",
    "MemberAgent",
    "MemberContext",
]
