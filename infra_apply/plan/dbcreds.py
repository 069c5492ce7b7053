"""A project's own database credentials as a dotenv file (``infra-apply db-credentials``).

The values come from the producer's state (the generated module's per-project ``sensitive``
outputs, decoded by ``credentials_from_output``); ``dotenv_text`` builds the file and
``write_dotenv`` writes it 0600, atomically, never over a file others can read.

Decisions a caller relies on:

* ``DATABASE_URL`` and ``PGHOST`` name the host the project's client can reach (``choose``):
  the cluster's *private* host when the droplet hosting the project is (or will be created) in
  the cluster's VPC, which reaches it without leaving DigitalOcean's private network; else
  nothing is written and the error says why and what to do. ``--connect public`` (the public
  host, for a client outside that VPC whose address the cluster trusts) or ``--connect
  private`` (a client the operator knows is in the VPC) decide instead of the check.
* ``sslmode=require`` always (``PGSSLMODE`` too): DigitalOcean's managed PostgreSQL only takes TLS.
* Values are quoted so ``set -a; . FILE`` (any POSIX shell) and python-dotenv both read back
  exactly the same string: single quotes when the value holds no single quote, no backslash
  pair and no final backslash (python-dotenv decodes those inside single quotes; a shell never
  does), else double quotes escaping only backslash and double quote (both readers decode those
  alike), provided the value holds no ``$`` or backtick (a shell expands or runs them inside
  double quotes). A value no quoting serves both is refused, the password never echoed:
  ``${...}`` (dotenv readers expand it in any quoting), a carriage return (python-dotenv reads
  the file in text mode, where it becomes a line break), and a single quote, backslash pair or
  final backslash together with ``$`` or a backtick.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from infra_apply.errors import InfraApplyError
from infra_apply.runtime.fs import PRIVATE_FILE, atomic_write
from infra_apply.untrusted import short, visible

RULE = "db_credentials"
SSLMODE = "require"

# python-dotenv's interpolation pattern (dotenv/variables.py), widened to any ${...}.
_INTERPOLATION = re.compile(r"\$\{[^}]*\}")
_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
# What a shell expands or runs inside double quotes (python-dotenv keeps a backslash before them).
_SHELL_ACTIVE = frozenset("$`")
_NEW_PASSWORD = (
    "give the database user a new password (DigitalOcean's generated passwords are letters, digits and '_')"
)


@dataclass(frozen=True)
class DbCredentials:
    user: str
    password: str = field(repr=False)
    database: str
    host: str  # the cluster's public host
    port: int
    private_host: str | None  # reachable from droplets in the cluster's VPC
    # The cluster's region and VPC (private_network_uuid); None in a state from before they
    # were part of the output.
    region: str | None = None
    vpc: str | None = None


def credentials_from_output(value: Any, where: str) -> DbCredentials:
    """The generated module's per-project output: an object with ``user``, ``password``,
    ``database``, ``host``, ``port`` and ``private_host``."""

    def fail(message: str) -> InfraApplyError:
        return InfraApplyError(message, path=where, rule=RULE)

    if not isinstance(value, Mapping):
        raise fail("the database credentials output is not an object")
    for key in ("user", "password", "database", "host"):
        if not isinstance(value.get(key), str) or not value[key]:
            raise fail(f"the database credentials output has no {key}")
    port = value.get("port")
    if isinstance(port, float) and port.is_integer():
        port = int(port)  # Terraform numbers come back from JSON as floats sometimes
    if not isinstance(port, int) or isinstance(port, bool):
        raise fail("the database credentials output has no port number")
    private = value.get("private_host")
    for key in ("private_host", "region", "private_network_uuid"):
        if value.get(key) is not None and not isinstance(value[key], str):
            raise fail(f"the database credentials output's {key} is not a string")
    return DbCredentials(
        user=value["user"],
        password=value["password"],
        database=value["database"],
        host=value["host"],
        port=port,
        private_host=private or None,
        region=value.get("region") or None,
        vpc=value.get("private_network_uuid") or None,
    )


@dataclass(frozen=True)
class Client:
    """Where a project's database client runs, as far as the manifests and state say: the droplet
    whose hosts include the project's ``service.host``."""

    host: str | None  # the project's service.host (None: it names none)
    droplet: str | None = None  # the droplet with that host (None: no droplet infra-apply manages)
    producer: str | None = None  # the droplet's producer
    region: str | None = None  # the droplet's region (manifest)
    created: bool = False  # the droplet is in state
    vpc: str | None = None  # the VPC it runs in (state; None when not created or not recorded)


CONNECT = ("private", "public")


@dataclass(frozen=True)
class Choice:
    public: bool
    why: str  # the dotenv's comment line: which host and why that one


class Unreachable(InfraApplyError):
    """The private host is out of the client's reach, or whether it is cannot be told. ``way``
    says what the caller offers instead: ``unknown`` (--connect public or private),
    ``elsewhere`` (--connect public, or move the project), ``stale`` (apply first)."""

    def __init__(self, message: str, way: str) -> None:
        super().__init__(message, rule=RULE)
        self.way = way


def choose(c: DbCredentials, client: Client, cluster: str, connect: str | None = None) -> Choice:
    """The host the client can reach: private when its droplet is in the cluster's VPC (or will
    be created there: same region, render places it in the cluster's VPC); ``connect`` decides
    instead. Never a private host the client cannot reach: ``Unreachable`` says why."""
    if connect == "public":
        return Choice(True, "public host (--connect public): the client's address must be a trusted source")
    if connect == "private":
        return Choice(False, "private host (--connect private): reachable from the cluster's VPC only")
    if client.droplet is None:
        where = (
            f"runs on host {client.host!r}, which is on no droplet infra-apply manages"
            if client.host
            else "names no service.host"
        )
        raise Unreachable(
            f"the project {where}: whether it can reach the private host of cluster {cluster!r} "
            "(from the cluster's VPC only) is unknown",
            "unknown",
        )
    who = f"droplet {client.droplet!r}"
    live, vpc, region = (visible(short(v, 60)) if v else v for v in (client.vpc, c.vpc, c.region))
    if c.vpc is None or (client.created and client.vpc is None):
        raise Unreachable(
            f"the state does not record the VPC of cluster {cluster!r} or of {who} yet (applied by "
            "an older infra-apply)",
            "stale",
        )
    if client.created and client.vpc != c.vpc:
        raise Unreachable(
            f"{who} runs in VPC {live}, not in VPC {vpc} of cluster {cluster!r}: the cluster's "
            "private host is out of its reach",
            "elsewhere",
        )
    if client.created:
        return Choice(False, f"private host: {client.droplet} runs in the cluster's VPC")
    if c.region is not None and client.region != c.region:
        raise Unreachable(
            f"{who} will be created in region {client.region}, cluster {cluster!r} is in {region}: "
            "a VPC is regional, so the cluster's private host will be out of its reach",
            "elsewhere",
        )
    return Choice(False, f"private host: {client.droplet} will be created in the cluster's VPC")


def chosen_host(c: DbCredentials, *, public: bool = False) -> str:
    if public:
        return c.host
    if not c.private_host:
        raise InfraApplyError(
            "the cluster has no private host in state; use its public host instead", rule=RULE
        )
    return c.private_host


def database_url(c: DbCredentials, *, public: bool = False) -> str:
    """``postgresql://USER:PASSWORD@HOST:PORT/DB?sslmode=require``, user, password and database
    percent-encoded (every reserved character, so no ``@``, ``:`` or ``/`` can move a boundary)."""
    host = chosen_host(c, public=public)
    user, password, database = (quote(v, safe="") for v in (c.user, c.password, c.database))
    return f"postgresql://{user}:{password}@{host}:{c.port}/{database}?sslmode={SSLMODE}"


def dotenv_text(c: DbCredentials, *, public: bool = False, why: str | None = None) -> str:
    _check(c)
    host = chosen_host(c, public=public)
    values = {
        "DATABASE_URL": database_url(c, public=public),
        "PGHOST": host,
        "PGPORT": str(c.port),
        "PGDATABASE": c.database,
        "PGUSER": c.user,
        "PGPASSWORD": c.password,
        "PGSSLMODE": SSLMODE,
    }
    where = "public host" if public else "private host: reachable from droplets in the cluster's VPC"
    lines = [
        "# Database credentials written by `infra-apply db-credentials`: a secret, keep it 0600.",
        f"# Connects to the cluster's {why or where}.",
        *(f"{key}={quote_value(key, value)}" for key, value in values.items()),
    ]
    return "\n".join(lines) + "\n"


def quote_value(key: str, value: str) -> str:
    """``value`` as a dotenv value that ``set -a; . FILE`` and python-dotenv read back exactly."""
    if _INTERPOLATION.search(value):
        raise _uncarried(
            key,
            "contains '${...}', which dotenv readers expand as a variable reference in any quoting",
        )
    if "\r" in value:
        raise _uncarried(key, "contains a carriage return, which python-dotenv reads as a line break")
    if "'" not in value and "\\\\" not in value and not value.endswith("\\"):
        return f"'{value}'"
    if not _SHELL_ACTIVE.intersection(value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise _uncarried(
        key,
        "contains a ', a backslash pair or a final backslash together with '$' or '`', which no quoting "
        "reads back alike under `set -a; . FILE` and in python-dotenv",
    )


def _uncarried(key: str, why: str) -> InfraApplyError:
    return InfraApplyError(f"{key} {why}, so no dotenv file can carry it; {_NEW_PASSWORD}", rule=RULE)


def _check(c: DbCredentials) -> None:
    def fail(message: str) -> InfraApplyError:
        return InfraApplyError(message, rule=RULE)

    for name, value in (("user", c.user), ("password", c.password), ("database", c.database)):
        if not value:
            raise fail(f"the database {name} is empty")
        if "\x00" in value:
            raise fail(f"the database {name} contains a NUL character, which no environment can hold")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise fail(f"the database {name} is not valid Unicode text") from None
    for name, host in (("host", c.host), ("private host", c.private_host)):
        if host is not None and not _HOST.match(host):
            raise fail(f"the cluster's {name} {host!r} is not a host name")
    if not 0 < c.port < 65536:
        raise fail(f"the cluster's port {c.port} is not a TCP port")


def write_dotenv(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as a 0600 file, atomically.

    Refuses to replace a file that group or others can access (it may be shared or committed:
    a secret must not land where that file's readers expect to find something else), a symbolic
    link (the secret would land somewhere other than where the operator looked) or a folder.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise InfraApplyError(f"cannot write {path}: {exc.strerror}", path=str(path), rule=RULE) from None
    if st is not None:
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            raise InfraApplyError(
                "is a symbolic link; give the path of the file itself", path=str(path), rule=RULE
            )
        if not stat.S_ISREG(st.st_mode):
            raise InfraApplyError("exists and is not a regular file", path=str(path), rule=RULE)
        if mode & 0o077:
            raise InfraApplyError(
                f"exists with mode {mode:04o}, open to group or others: not writing credentials over "
                "it; remove it, or `chmod 600` it if it is meant to be private",
                path=str(path),
                rule=RULE,
            )
    atomic_write(path, text, mode=PRIVATE_FILE)
