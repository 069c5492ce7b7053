"""The producer's DigitalOcean token file ``~/.vault/do_pat_<producer>``.

One token on one line; a UTF-8 byte order mark and surrounding whitespace are tolerated,
anything else is refused with a message that names the file and the problem but never shows
what the file holds (it may be a token with a stray character, or someone else's secret).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from infra_apply.errors import InfraApplyError
from infra_apply.runtime.fs import FileTooLarge, read_regular

TOKEN_VARS = ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN")
MAX_BYTES = 4096  # DigitalOcean tokens are 71 characters; anything this big is not one
_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: what an HTTP bearer token is


def read_pat(path: Path, warn: Callable[[str], None]) -> str | None:
    """The token in ``path``; None when there is no such file or it is blank.

    Never blocks: the file is opened non-blocking and refused unless it is a regular file (a
    FIFO would otherwise wait forever for a writer). Warns through ``warn`` when group or
    others may read or write it.
    """
    try:
        raw, mode = read_regular(path, MAX_BYTES)
    except FileNotFoundError:
        return None
    except FileTooLarge:
        raise _error(path, f"it is larger than {MAX_BYTES} bytes; it must hold the token alone") from None
    except OSError as exc:
        raise _error(path, f"cannot read it: {exc.strerror}") from None
    if mode & 0o077:
        warn(
            f"infra-apply: warning: {path} is accessible to group or others (mode {mode:04o}); "
            f"it holds a DigitalOcean token: chmod 600 {path}"
        )
    return _token(path, raw)


def _token(path: Path, raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8-sig")  # strips one leading byte order mark
    except UnicodeDecodeError:
        raise _error(path, "it is not UTF-8 text") from None
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    if len(lines) > 1:
        raise _error(path, f"it holds {len(lines)} non-empty lines; it must hold the token alone on one line")
    token = lines[0].strip()
    if not _TOKEN.fullmatch(token):
        raise _error(
            path,
            "the token holds a character no token has (a space, a control character or a "
            "non-ASCII character)",
        )
    return token


def env_token(env: Mapping[str, str], names: Sequence[str]) -> tuple[str, str] | None:
    """The first of the variables ``names`` set in ``env``, as (name, token); None when none is.

    A token goes into an HTTP header (and Terraform's): one holding a line break, another
    control character, a space or a non-ASCII character is refused by name, never shown.
    """
    for name in names:
        value = env.get(name)
        if value:
            if not _TOKEN.fullmatch(value):
                raise InfraApplyError(
                    f"${name} holds a character no token has (a line break or another control "
                    "character, a space, or a non-ASCII character); set it to the token alone",
                    rule="token",
                )
            return name, value
    return None


def do_token(env: Mapping[str, str]) -> str | None:
    """The DigitalOcean token in the environment (DIGITALOCEAN_TOKEN, then _ACCESS_TOKEN), checked."""
    found = env_token(env, TOKEN_VARS)
    return None if found is None else found[1]


def _error(path: Path, problem: str) -> InfraApplyError:
    return InfraApplyError(f"unusable DigitalOcean token file: {problem}", path=str(path), rule="token")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def token_env(
    env: Mapping[str, str], producer: str, warn: Callable[[str], None] | None = None
) -> dict[str, str]:
    """The token for Terraform's environment only: env first, then ~/.vault/do_pat_<producer>."""
    if do_token(env):
        return {}
    home = Path(env.get("HOME") or Path.home())
    pat = home / ".vault" / f"do_pat_{producer}"
    token = read_pat(pat, warn or _stderr)
    if token is None:
        raise InfraApplyError(
            f"no DigitalOcean token for producer {producer}: set DIGITALOCEAN_TOKEN or put the "
            f"producer's token in {pat} (or use --sandbox)"
        )
    return {"DIGITALOCEAN_TOKEN": token}
