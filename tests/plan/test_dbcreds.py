"""Database credentials as a dotenv file: read back exactly by python-dotenv, written 0600.

The credentials come from a genuine sandbox state (a small module applied with the sandbox
provider, its sensitive output read with `terraform output -json`); hostile passwords are a
hypothesis property.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from dotenv import dotenv_values
from hypothesis import example, given, settings
from hypothesis import strategies as st

from infra_apply.errors import InfraApplyError
from infra_apply.plan.dbcreds import (
    DbCredentials,
    credentials_from_output,
    database_url,
    dotenv_text,
    write_dotenv,
)
from infra_apply.sandbox import cloud
from infra_apply.sandbox.install import install

CLUSTER = "uvlava-pg"
KEYS = ["DATABASE_URL", "PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSSLMODE"]

CREDS = DbCredentials(
    user="ledger_app",
    password="AVNS_s3cr3t",
    database="ledger",
    host="uvlava-pg-do-user-0-0.b.db.ondigitalocean.com",
    port=25060,
    private_host="private-uvlava-pg-do-user-0-0.b.db.ondigitalocean.com",
)

MODULE_TF = f"""terraform {{
  required_providers {{
    digitalocean = {{
      source  = "digitalocean/digitalocean"
      version = "2.99.1"
    }}
  }}
}}

provider "digitalocean" {{}}

data "digitalocean_database_cluster" "main" {{
  name = "{CLUSTER}"
}}

resource "digitalocean_database_db" "ledger" {{
  cluster_id = data.digitalocean_database_cluster.main.id
  name       = "ledger"
}}

resource "digitalocean_database_user" "ledger" {{
  cluster_id = data.digitalocean_database_cluster.main.id
  name       = "ledger_app"
}}

# The shape infra-apply's generated module is to expose per project.
output "db_ledger" {{
  sensitive = true
  value = {{
    user         = digitalocean_database_user.ledger.name
    password     = digitalocean_database_user.ledger.password
    database     = digitalocean_database_db.ledger.name
    host         = data.digitalocean_database_cluster.main.host
    port         = data.digitalocean_database_cluster.main.port
    private_host = data.digitalocean_database_cluster.main.private_host
  }}
}}
"""


def parse(text: str) -> dict[str, str | None]:
    return dict(dotenv_values(stream=io.StringIO(text)))


def url_parts(url: str) -> tuple[str, str, str, str, int, str]:
    u = urlsplit(url)
    assert u.username is not None and u.password is not None and u.hostname is not None and u.port
    return (u.scheme, unquote(u.username), unquote(u.password), u.hostname, u.port, unquote(u.path[1:]))


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")
def test_credentials_from_a_real_sandbox_state_make_a_private_0600_dotenv(tmp_path: Path) -> None:
    setup = install(tmp_path / "state", clusters=(CLUSTER,))
    env = {k: v for k, v in os.environ.items() if k not in ("TF_PLUGIN_CACHE_DIR", "DIGITALOCEAN_TOKEN")}
    env |= setup.env
    work = tmp_path / "work"
    work.mkdir()
    (work / "main.tf").write_text(MODULE_TF)
    for args in (["init", "-input=false"], ["apply", "-auto-approve", "-input=false"]):
        done = subprocess.run(
            ["terraform", *args, "-no-color"], cwd=work, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    outputs = json.loads(
        subprocess.run(
            ["terraform", "output", "-json"], cwd=work, env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    creds = credentials_from_output(outputs["db_ledger"]["value"], "state")
    saved = cloud.load(setup.cloud)
    user = next(iter(saved["users"].values()))
    cluster = cloud.find_cluster(saved, CLUSTER)
    assert cluster is not None
    assert creds == DbCredentials(
        user="ledger_app",
        password=user["password"],
        database="ledger",
        host=cluster["host"],
        port=25060,
        private_host=cluster["private_host"],
    )
    assert user["password"] not in repr(creds)

    target = tmp_path / "ledger.env"
    write_dotenv(target, dotenv_text(creds))
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    values = dotenv_values(target)
    assert list(values) == KEYS
    assert values["PGUSER"] == "ledger_app" and values["PGDATABASE"] == "ledger"
    assert values["PGPASSWORD"] == user["password"]
    assert (values["PGHOST"], values["PGPORT"], values["PGSSLMODE"]) == (
        cluster["private_host"],
        "25060",
        "require",
    )
    assert values["DATABASE_URL"] == (
        f"postgresql://ledger_app:{user['password']}@{cluster['private_host']}:25060/ledger?sslmode=require"
    )


def test_database_url_uses_the_private_host_unless_asked_for_the_public_one() -> None:
    assert database_url(CREDS) == (
        "postgresql://ledger_app:AVNS_s3cr3t@private-uvlava-pg-do-user-0-0.b.db.ondigitalocean.com:25060"
        "/ledger?sslmode=require"
    )
    public = parse(dotenv_text(CREDS, public=True))
    assert public["PGHOST"] == CREDS.host
    assert url_parts(public["DATABASE_URL"] or "")[3] == CREDS.host
    no_private = DbCredentials("u", "p", "d", CREDS.host, 25060, None)
    with pytest.raises(InfraApplyError, match="no private host"):
        dotenv_text(no_private)
    assert parse(dotenv_text(no_private, public=True))["PGHOST"] == CREDS.host


def test_the_file_reads_back_in_order_with_every_key() -> None:
    text = dotenv_text(CREDS)
    assert text.startswith("# Database credentials written by `infra-apply db-credentials`")
    assert parse(text) == {
        "DATABASE_URL": database_url(CREDS),
        "PGHOST": CREDS.private_host,
        "PGPORT": "25060",
        "PGDATABASE": "ledger",
        "PGUSER": "ledger_app",
        "PGPASSWORD": "AVNS_s3cr3t",
        "PGSSLMODE": "require",
    }
    assert "PGPASSWORD='AVNS_s3cr3t'\n" in text  # plain values stay shell- and compose-literal


# Every character a dotenv or URL parser could stumble on, plus arbitrary text.
HOSTILE = st.one_of(
    st.text(alphabet=st.sampled_from("'\"$#\\ \n\r\t{}=@:/?%&`!;\x0b\x0c\x07\x08\x7f\x1béa_0"), min_size=1),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1),
)


def _interpolates(value: str) -> bool:
    start = value.find("${")
    return start >= 0 and "}" in value[start + 2 :]


def _uncarried(value: str) -> str | None:
    """Why no quoting serves both a shell and python-dotenv for ``value``; None when one does."""
    if _interpolates(value):
        return "contains '${...}'"
    if "\r" in value:
        return "contains a carriage return"
    if ("'" in value or "\\\\" in value or value.endswith("\\")) and ("$" in value or "`" in value):
        return "contains a ', a backslash pair or a final backslash together with '$' or '`'"
    return None


SHELLS = [s for s in ("/bin/sh", "/bin/dash", "/bin/bash") if os.path.exists(s)]
SOURCED = 'set -a; . ./db.env; printf "%s\\0" "$PGUSER" "$PGPASSWORD" "$PGDATABASE" "$DATABASE_URL"'


def _read_back_everywhere(creds: DbCredentials) -> None:
    """Written through a real file, then read by python-dotenv (from the file and from the text)
    and by `set -a; . ./db.env` in every shell at hand: every byte comes back."""
    text = dotenv_text(creds)
    url = database_url(creds)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "db.env"
        write_dotenv(path, text)
        from_file = dotenv_values(path)
        for shell in SHELLS:
            done = subprocess.run(
                [shell, "-c", SOURCED], cwd=folder, capture_output=True, env={"PATH": os.defpath}, check=True
            )
            fields = done.stdout.split(b"\0")[:-1]
            assert fields == [v.encode() for v in (creds.user, creds.password, creds.database, url)], shell
            assert done.stderr == b"", shell
    for values in (parse(text), from_file):
        assert (values["PGUSER"], values["PGPASSWORD"], values["PGDATABASE"]) == (
            creds.user,
            creds.password,
            creds.database,
        )
        assert url_parts(values["DATABASE_URL"] or "") == (
            "postgresql",
            creds.user,
            creds.password,
            CREDS.private_host,
            25060,
            creds.database,
        )
        assert urlsplit(values["DATABASE_URL"] or "").query == "sslmode=require"
        assert list(values) == KEYS


def _carried_or_refused(user: str, password: str, database: str) -> None:
    creds = DbCredentials(user, password, database, CREDS.host, 25060, CREDS.private_host)
    whys = [w for w in map(_uncarried, (user, password, database)) if w]
    if not whys:
        _read_back_everywhere(creds)
        return
    with pytest.raises(InfraApplyError) as err:
        dotenv_text(creds)
    # One line that names the variable, never echoes the value.
    key, message = err.value.message.split(" ", 1)
    assert key in KEYS and "\n" not in err.value.format()
    assert message.startswith(tuple(whys)) and message.endswith(
        "so no dotenv file can carry it; give the database user a new password (DigitalOcean's "
        "generated passwords are letters, digits and '_')"
    )


# Every character a POSIX shell treats specially, alone and in company.
SHELL_META = "`$()'\"\\;&|<>*?[]{}~#! \t\n=%^,-+@:/."
FIXED_PASSWORDS = [
    *(f"a{ch}b" for ch in SHELL_META),
    *(f"{ch}" for ch in SHELL_META if ch.strip()),
    "$(touch pwned)",
    "`touch pwned`",
    "$HOME",
    "$1$$$?$#$*$@$!$-",
    "it's",
    "it's $HOME",  # no quoting serves both: refused
    "it's `id`",
    'say "hi" \\o/',
    "back\\\\slash",
    "back\\\\slash $HOME",  # refused
    "ends in \\",
    "ends in \\ $",  # refused
    "tab\there newline\nthere",
    "\\n\\t\\'\\\"",
    "#not a comment",
    "${HOME}",  # refused
    "a\rb",  # refused
    "é ü 漢字 \u202e \x1b[31m \x07",
]


@pytest.mark.parametrize("password", FIXED_PASSWORDS)
def test_every_shell_metacharacter_reads_back_in_shells_and_python_dotenv_or_is_refused(
    password: str,
) -> None:
    _carried_or_refused("app", password, "db")


@settings(max_examples=200, deadline=None)
@given(user=HOSTILE, password=HOSTILE, database=HOSTILE)
@example(user="a b", password="p'a\"s#w\\o\nr\td", database="db # not a comment")
@example(user="u", password="\\'", database="d")
@example(user="u", password="$$ $HOME ${ } $", database="d")
@example(user="u", password="  ", database="#")
@example(user="u", password="end\\", database="\n")
def test_hostile_values_read_back_exactly(user: str, password: str, database: str) -> None:
    _carried_or_refused(user, password, database)


def test_a_sourced_file_never_runs_or_expands_the_password(tmp_path: Path) -> None:
    """The defect: a password with a ' was double-quoted, and `$(...)` ran under `. file`."""
    marker = tmp_path / "pwned"
    for password in (f"it's$(touch {marker})", f"it's`touch {marker}`"):
        creds = DbCredentials("u", password, "d", CREDS.host, 25060, CREDS.private_host)
        try:
            text = dotenv_text(creds)
        except InfraApplyError:
            continue  # refused: nothing to source
        (tmp_path / "db.env").write_text(text)
        subprocess.run(["/bin/sh", "-c", "set -a; . ./db.env"], cwd=tmp_path, check=False)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("creds", "message"),
    [
        (DbCredentials("u", "", "d", "h", 1, None), "password is empty"),
        (DbCredentials("u", "p\x00", "d", "h", 1, None), "NUL"),
        (DbCredentials("u", "p\ud800", "d", "h", 1, None), "not valid Unicode"),
        (DbCredentials("u", "p", "d", "h/x", 1, None), "host 'h/x' is not a host name"),
        (DbCredentials("u", "p", "d", "h", 1, "a@b"), "private host 'a@b' is not a host name"),
        (DbCredentials("u", "p", "d", "h", 0, "h"), "port 0 is not a TCP port"),
    ],
)
def test_values_no_dotenv_or_url_can_carry_are_refused(creds: DbCredentials, message: str) -> None:
    with pytest.raises(InfraApplyError, match=message):
        dotenv_text(creds, public=creds.private_host is None)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "not an object"),
        ({"user": "u", "password": "p", "database": "d", "host": "h"}, "no port"),
        ({"user": "u", "password": "", "database": "d", "host": "h", "port": 1}, "no password"),
        (
            {"user": "u", "password": "p", "database": "d", "host": "h", "port": 1, "private_host": 3},
            "private_host",
        ),
    ],
)
def test_a_malformed_output_is_a_located_error(value: object, message: str) -> None:
    with pytest.raises(InfraApplyError, match=message) as err:
        credentials_from_output(value, "generated state")
    assert err.value.format().startswith("generated state: error db_credentials: ")


# --- writing ---------------------------------------------------------------------------------


def test_write_creates_0600_even_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_dotenv(tmp_path / "a.env", "X='1'\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.env").stat().st_mode) == 0o600
    assert (tmp_path / "a.env").read_bytes() == b"X='1'\n"
    write_dotenv(tmp_path / "a.env", "X='2'\n")  # its own private file is replaced
    assert (tmp_path / "a.env").read_text() == "X='2'\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.env"]  # no temporary file left


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_write_refuses_a_file_others_can_access(tmp_path: Path, mode: int) -> None:
    target = tmp_path / ".env"
    target.write_text("SHARED=1\n")
    target.chmod(mode)
    with pytest.raises(InfraApplyError) as err:
        write_dotenv(target, dotenv_text(CREDS))
    assert err.value.format() == (
        f"{target}: error db_credentials: exists with mode {mode:04o}, open to group or others: not "
        "writing credentials over it; remove it, or `chmod 600` it if it is meant to be private"
    )
    assert target.read_text() == "SHARED=1\n" and stat.S_IMODE(target.stat().st_mode) == mode


def test_write_refuses_a_symlink_a_folder_and_a_missing_folder(tmp_path: Path) -> None:
    real = tmp_path / "real.env"
    real.write_text("")
    real.chmod(0o600)
    (tmp_path / "link.env").symlink_to(real)
    with pytest.raises(InfraApplyError, match="symbolic link"):
        write_dotenv(tmp_path / "link.env", "X='1'\n")
    assert real.read_text() == ""
    (tmp_path / "folder").mkdir()
    with pytest.raises(InfraApplyError, match="not a regular file"):
        write_dotenv(tmp_path / "folder", "X='1'\n")
    with pytest.raises(InfraApplyError, match="cannot write"):
        write_dotenv(tmp_path / "missing" / "x.env", "X='1'\n")
