"""A member's credential file: who it is, where, and its sealing key.

The file is JSON written with mode 0600: the coordinator URL, federation and member
names, the member credential (a bearer token) and the member's X25519 private key
(hex). It is the member's secret; the coordinator holds only hashes and the public
key.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from workbench.errors import AuthenticationError, CredentialFileError

__all__ = ["Credential", "check_writable", "fallback_path"]


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

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the credential to ``path`` with mode 0600 and return the path.

        Parameters
        ----------
        path : path
            The file to write; its folder is created if needed.
        overwrite : bool, default=False
            Replace an existing file. Without it an existing file is refused, since
            the credential it holds may be the only copy of another member.

        Raises
        ------
        CredentialFileError
            If ``path`` exists (without ``overwrite``), is a folder, or cannot be
            written.
        """
        target = Path(path)
        check_writable(target, overwrite=overwrite)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        try:
            descriptor = os.open(target, flags, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(asdict(self), handle, indent=2)
            os.chmod(target, 0o600)
        except FileExistsError as exc:
            raise _exists(target) from exc
        except OSError as exc:
            raise CredentialFileError(
                f"the credential could not be written to {target}: {exc.strerror}",
                hint="choose a file in a folder you can write to",
            ) from exc
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
        except IsADirectoryError as exc:
            raise CredentialFileError(
                f"the credential path {source} is a folder, not a credential file",
                hint="pass the JSON file that join wrote, e.g. credential='a.json'",
            ) from exc
        except FileNotFoundError as exc:
            raise AuthenticationError(
                f"the credential file {source} does not exist",
                hint="join first: workbench join --invitation ... --credential FILE",
            ) from exc
        except PermissionError as exc:
            raise CredentialFileError(
                f"the credential file {source} cannot be read: {exc.strerror}",
                hint="run as the user who joined, or fix the file's permissions",
            ) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise AuthenticationError(
                f"{source} is not a Workbench credential file ({exc})",
                hint="join again to write a new one",
            ) from exc


def check_writable(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Check that a credential file can be written at ``path``, writing nothing.

    The folder is created if needed, and a temporary file is made and removed beside
    ``path``, so that a join finds a bad path before it redeems its invitation.

    Parameters
    ----------
    path : path
        Where the credential will be written.
    overwrite : bool, default=False
        Whether an existing file may be replaced.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    CredentialFileError
        If ``path`` is a folder, exists (without ``overwrite``), or its folder
        cannot be written.
    """
    target = Path(path)
    if target.is_dir():
        raise CredentialFileError(
            f"the credential path {target} is a folder",
            hint=f"name a file inside it, for example {target / 'member.json'}",
        )
    if target.exists() and not overwrite:
        raise _exists(target)
    probe = target.parent / f".{target.name}.{secrets.token_hex(4)}.probe"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(descriptor)
        probe.unlink()
    except OSError as exc:
        raise CredentialFileError(
            f"the credential cannot be written to {target}: {exc.strerror}",
            hint="choose a file in a folder you can write to",
        ) from exc
    return target


def fallback_path(path: str | os.PathLike[str]) -> Path:
    """A new file name beside ``path`` for a credential that could not go there."""
    target = Path(path)
    folder = target.parent if target.parent.is_dir() else Path.cwd()
    name = target.name or "credential"
    return folder / f"{name}.{secrets.token_hex(4)}.saved.json"


def _exists(target: Path) -> CredentialFileError:
    return CredentialFileError(
        f"the credential file {target} exists already; overwriting it would lose "
        "the member it holds",
        hint="choose another file, or pass --force (overwrite=True) to replace it",
    )
