"""The ``workbench`` command: coordinator, federations, members and the demo.

::

    workbench coordinator --data-dir DIR [--host 127.0.0.1] [--port 8470]
                          [--database URL] [--certfile PEM --keyfile PEM]
                          [--insecure] [--max-body-bytes N]
    workbench federation create NAME --data-dir DIR [--database URL]
    workbench invite NAME --member MEMBER (--data-dir DIR | --coordinator URL)
    workbench join --coordinator URL --invitation TOKEN --name MEMBER
                   --credential FILE
    workbench member --coordinator URL --credential FILE
                     --dataset NAME=PATH:TARGET [--dataset ...] [--publish]
    workbench demo [--json] [--rounds 10] [--key-bits 2048] [--seed 0]
    workbench demo conformal [--json] [--key-bits 2048] [--seed 0]

``invite`` over HTTP reads the admin token from ``WORKBENCH_ADMIN_TOKEN`` (or
``--admin-token``), so that it stays out of shell history.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workbench.errors import (
    ConfigurationError,
    DatasetError,
    ProtocolError,
    WorkbenchError,
)

logger = logging.getLogger(__name__)

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``workbench`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except WorkbenchError as exc:
        print(f"workbench: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {exc.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench", description="Federated research from notebooks."
    )
    commands = parser.add_subparsers(dest="command")

    coordinator = commands.add_parser("coordinator", help="run a coordinator")
    coordinator.add_argument("--data-dir", required=True, help="state folder")
    coordinator.add_argument("--host", default="127.0.0.1")
    coordinator.add_argument("--port", type=int, default=8470)
    coordinator.add_argument("--database", help="SQLAlchemy URL (default: SQLite)")
    coordinator.add_argument("--certfile", help="TLS certificate (PEM)")
    coordinator.add_argument("--keyfile", help="TLS private key (PEM)")
    coordinator.add_argument(
        "--insecure",
        action="store_true",
        help="allow plain HTTP on an address other than loopback",
    )
    coordinator.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024)
    coordinator.add_argument("--log-level", default="INFO")
    coordinator.set_defaults(run=_coordinator)

    federation = commands.add_parser("federation", help="manage federations")
    actions = federation.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a federation")
    create.add_argument("name")
    create.add_argument("--data-dir", required=True)
    create.add_argument("--database")
    create.set_defaults(run=_federation_create)

    invite = commands.add_parser("invite", help="issue a single-use invitation")
    invite.add_argument("federation")
    invite.add_argument("--member", required=True)
    invite.add_argument("--data-dir", help="act on the coordinator's state directly")
    invite.add_argument("--database")
    invite.add_argument("--coordinator", help="coordinator URL (with the admin token)")
    invite.add_argument(
        "--admin-token", default=os.environ.get("WORKBENCH_ADMIN_TOKEN")
    )
    invite.add_argument("--cafile", help="CA bundle for a self-signed certificate")
    invite.set_defaults(run=_invite)

    join = commands.add_parser("join", help="redeem an invitation")
    join.add_argument("--coordinator", required=True)
    join.add_argument("--invitation", required=True)
    join.add_argument("--name", required=True)
    join.add_argument("--credential", required=True, help="file to write (0600)")
    join.add_argument(
        "--force", action="store_true", help="replace an existing credential file"
    )
    join.add_argument("--cafile")
    join.set_defaults(run=_join)

    member = commands.add_parser("member", help="run a member agent (daemon)")
    member.add_argument("--coordinator", help="URL (default: the credential's)")
    member.add_argument("--credential", required=True)
    member.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="NAME=PATH:TARGET",
        help="a dataset to serve (repeatable)",
    )
    member.add_argument(
        "--publish",
        action="store_true",
        help="publish each dataset's schema and row count, not only its name",
    )
    member.add_argument("--poll-wait", type=float, default=20.0)
    member.add_argument("--cafile")
    member.add_argument("--log-level", default="INFO")
    member.set_defaults(run=_member)

    demo = commands.add_parser("demo", help="four hospitals, encrypted FedAvg")
    demo.add_argument(
        "which",
        nargs="?",
        choices=("fedavg", "conformal"),
        default="fedavg",
        help="fedavg (default): encrypted FedAvg; conformal: three labs' p-values",
    )
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    demo.add_argument("--rounds", type=int, default=10)
    demo.add_argument("--key-bits", type=int, default=2048)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    return parser


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _check_log_level(level: str) -> None:
    if level.upper() not in _LOG_LEVELS:
        raise ConfigurationError(
            f"--log-level must be one of {', '.join(_LOG_LEVELS)}, got {level!r}",
            hint="pass --log-level INFO, say",
        )


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request at INFO: one line per long-poll drowns the log.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _coordinator(args: argparse.Namespace) -> int:
    from workbench.coordinator import CoordinatorSettings, check_transport, serve

    _check_log_level(args.log_level)
    if args.max_body_bytes < 1:
        raise ConfigurationError(
            f"--max-body-bytes must be a positive number of bytes, got "
            f"{args.max_body_bytes}",
            hint="leave it out for 16 MiB, or pass e.g. --max-body-bytes 33554432",
        )
    check_transport(args.host, args.certfile, args.keyfile, insecure=args.insecure)
    _logging(args.log_level)
    settings = CoordinatorSettings(
        data_dir=args.data_dir,
        database_url=args.database,
        max_body_bytes=args.max_body_bytes,
    )
    serve(
        settings,
        host=args.host,
        port=args.port,
        certfile=args.certfile,
        keyfile=args.keyfile,
        insecure=args.insecure,
    )
    return 0


def _federation_create(args: argparse.Namespace) -> int:
    from workbench.coordinator import Coordinator, Storage
    from workbench.names import validate_name

    # The name first: a refused name must not leave a new state folder behind.
    validate_name("federation", args.name)
    storage = Storage(args.data_dir, args.database)
    try:
        token = Coordinator(storage).create_federation(args.name)
    finally:
        storage.dispose()
    print(f"federation {args.name} created; its admin token (shown once):")
    print(token)
    return 0


def _invite(args: argparse.Namespace) -> int:
    if (args.data_dir is None) == (args.coordinator is None):
        raise ProtocolError(
            "give exactly one of --data-dir and --coordinator",
            hint="--data-dir on the coordinator's machine, --coordinator elsewhere",
        )
    if args.data_dir is not None:
        from sqlalchemy import select

        from workbench.coordinator import Coordinator, Storage
        from workbench.coordinator.storage import Federation

        storage = Storage(args.data_dir, args.database)
        try:
            with storage.session() as db:
                found = db.scalar(
                    select(Federation).where(Federation.name == args.federation)
                )
            if found is None:
                raise ProtocolError(
                    f"there is no federation {args.federation!r} in {args.data_dir}",
                    hint="create it with: workbench federation create NAME",
                )
            token = Coordinator(storage).create_invitation(found, args.member)
        finally:
            storage.dispose()
    else:
        from workbench.client import CoordinatorClient

        if not args.admin_token:
            raise ProtocolError(
                "no admin token given",
                hint="set WORKBENCH_ADMIN_TOKEN or pass --admin-token",
            )
        with CoordinatorClient(
            args.coordinator, args.admin_token, verify=args.cafile or True
        ) as client:
            token = client.invite(args.federation, args.member)
    print(f"single-use invitation for {args.member} in {args.federation}:")
    print(token)
    return 0


def _join(args: argparse.Namespace) -> int:
    from workbench.api import connect

    if not args.coordinator.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"--coordinator must be the coordinator's http:// or https:// address, "
            f"got {args.coordinator!r}",
            hint="pass e.g. --coordinator http://127.0.0.1:8470",
        )
    parent = Path(args.credential).expanduser().parent
    if not parent.is_dir():
        raise ConfigurationError(
            f"--credential {args.credential}: the folder {parent} does not exist",
            hint=f"create it first (mkdir -p {parent}), or name a file in an "
            "existing folder",
        )
    federation = connect(
        args.coordinator,
        invitation=args.invitation,
        name=args.name,
        save_to=args.credential,
        overwrite=args.force,
        verify=args.cafile or True,
    )
    federation.close()
    print(
        f"joined {federation.name} as {federation.member}; "
        f"credential in {args.credential}"
    )
    return 0


def parse_dataset(text: str) -> tuple[str, Path, str]:
    """Read a ``NAME=PATH:TARGET`` argument.

    Raises
    ------
    DatasetError
        If a part is missing.
    """
    from workbench.names import validate_name

    name, equals, rest = text.partition("=")
    path, colon, target = rest.rpartition(":")
    if not (equals and colon and name and path and target):
        raise DatasetError(
            f"--dataset {text!r} is not NAME=PATH:TARGET",
            hint="for example --dataset cancer=/data/cancer.csv:diagnosis",
        )
    return validate_name("dataset", name), Path(path), target


def publish_datasets(client: Any, registry: Any, *, full: bool) -> None:
    """Publish the name of every dataset in ``registry`` to the federation.

    Jobs then ask the members that serve a dataset by default. With ``full`` the
    schema (column names and dtypes) and row count go too; values never do.
    """
    for name in registry.names():
        if full:
            dataset = registry.get(name)
            client.publish_dataset(name, dataset.schema(), len(dataset.frame))
        else:
            client.publish_dataset(name, {}, None)
        logger.info(
            "dataset %s published (%s)", name, "schema and rows" if full else "name"
        )


def _member(args: argparse.Namespace) -> int:
    from workbench.member import Credential, DatasetRegistry, MemberAgent

    if not args.dataset:
        raise DatasetError(
            "workbench member was given no --dataset: it would serve nothing",
            hint="pass --dataset NAME=PATH:TARGET (repeatable), e.g. "
            "--dataset cancer=/data/cancer.csv:diagnosis",
        )
    _check_log_level(args.log_level)
    _logging(args.log_level)
    credential = Credential.load(args.credential)
    if args.coordinator:
        credential = Credential(
            **{**credential.__dict__, "coordinator": args.coordinator}
        )
    registry = DatasetRegistry()
    for text in args.dataset:
        name, path, target = parse_dataset(text)
        registry.register(name, path, target=target)
    agent = MemberAgent(
        credential, registry, poll_wait=args.poll_wait, verify=args.cafile or True
    )
    publish_datasets(agent.client, registry, full=args.publish)

    def stop(_signal: int, _frame: Any) -> None:
        agent.stop(timeout=0)
        if agent.polling:
            # Nothing in progress: end the long-poll now rather than when it ends.
            raise _Stopping

    signal.signal(signal.SIGTERM, stop)
    try:
        agent.run_forever()
    except _Stopping:
        logger.info("member %s stopped", credential.member)
    finally:
        agent.client.close()
    return 0


class _Stopping(Exception):
    """Raised by the SIGTERM handler to end an idle member's long-poll."""


_KEY_BITS = (512, 1024, 2048, 3072)


def _check_demo(args: argparse.Namespace) -> str | None:
    if args.key_bits not in _KEY_BITS:
        return (
            f"--key-bits must be 2048 or 3072 (512 or 1024 for a quick, insecure "
            f"run), got {args.key_bits}"
        )
    if args.which == "fedavg" and args.rounds < 1:
        return f"--rounds must be at least 1, got {args.rounds}"
    if not 0 <= args.seed <= 2**32 - 1:
        return f"--seed must be from 0 to {2**32 - 1}, got {args.seed}"
    return None


def _demo(args: argparse.Namespace) -> int:
    from workbench.sim import format_demo, run_demo

    problem = _check_demo(args)
    if problem is not None:
        print(f"workbench demo: {problem}", file=sys.stderr)
        return 2
    if args.which == "conformal":
        return _conformal_demo(args)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = run_demo(
        rounds=args.rounds,
        key_bits=args.key_bits,
        seed=args.seed,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps(_finite(result), indent=2))
    else:
        print(format_demo(result))
    return 0


def _conformal_demo(args: argparse.Namespace) -> int:
    from workbench.conformal_demo import format_conformal_demo, run_conformal_demo

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = run_conformal_demo(
        key_bits=args.key_bits,
        seed=args.seed,
        allow_insecure_keys=args.key_bits < 2048,
    )
    if args.json:
        print(json.dumps(_finite(result), indent=2))
    else:
        print(format_conformal_demo(result))
    return 0


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
