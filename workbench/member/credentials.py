"""A member's credential file: who it is, where, and its sealing key.

The file is JSON written with mode 0600: the coordinator URL, federation and member
names, the member credential (a bearer token) and the member's X25519 private key
(hex). It is the member's secret; the coordinator holds only hashes and the public
key.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from workbench.errors import AuthenticationError

__all__ = ["Credential"]


@dataclass(frozen=True)
class Credential:
    """A member's identity at one coordinator.

    Parameters
    ----------
    coordinator : str
        Base URL of the coordinator.
    federation : str
    member : str
    token : str
        The member credential.
    sealing_private_key : str
        X25519 private key, hex.
    sealing_public_key : str
        X25519 public key, hex.
    """

    coordinator: str
    federation: str
    member: str
    token: str
    sealing_private_key: str
    sealing_public_key: str

    def __repr__(self) -> str:
        return (
            f"Credential(member={self.member!r}, federation={self.federation!r}, "
            f"coordinator={self.coordinator!r})"
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the credential to ``path`` with mode 0600 and return the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(asdict(self), handle, indent=2)
        os.chmod(target, 0o600)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Credential:
        """Read a credential file.

        Raises
        ------
        AuthenticationError
            If the file is missing or not a credential file.
        """
        source = Path(path)
        try:
            body = json.loads(source.read_text(encoding="utf-8"))
            return cls(**{k: str(body[k]) for k in cls.__dataclass_fields__})
        except FileNotFoundError as exc:
            raise AuthenticationError(
                f"the credential file {source} does not exist",
                hint="join first: workbench join --invitation ... --credential FILE",
            ) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise AuthenticationError(
                f"{source} is not a Workbench credential file ({exc})",
                hint="join again to write a new one",
            ) from exc
