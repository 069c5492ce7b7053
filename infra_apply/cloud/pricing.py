"""Where a run's prices come from: the account's ``GET /v2/sizes``, else the shipped table.

Asked once per run, after pre-flight (which has checked the token and the account), and only by
the verbs that print a plan summary. The sandbox account never asks: its catalogue is the table. A
failed call (offline, a 5xx, a refused token) costs one warning line and the dated table; the
plan itself never fails for want of prices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from infra_apply.errors import InfraApplyError
from infra_apply.plan.cost import TABLE_SOURCE, Prices, fallback_prices, prices_from_api, prices_from_sizes
from infra_apply.runtime.workcopy import Context

if TYPE_CHECKING:
    from infra_apply.cloud.accounts import Accounts
    from infra_apply.cloud.do_api import Client, Retry

# Prices inform; they must not hold a plan up for long (pre-flight has just reached the API).
TIMEOUT_SECONDS = 20.0
RETRIES = 2


def run_prices(
    ctx: Context, producers: Sequence[str], *, retry: Retry | None = None, accounts: Accounts | None = None
) -> Prices:
    """The run's account's prices (``Account.prices``), or the shipped table."""
    return ctx.account.prices(ctx, producers, retry=retry, accounts=accounts)


def account_prices(
    ctx: Context, producers: Sequence[str], *, retry: Retry | None = None, accounts: Accounts | None = None
) -> Prices:
    """A live account's prices (one ``/v2/sizes`` listing: list prices are the same for every
    account, so the first producer's token serves the run), or the shipped table. With the
    run's ``accounts`` the listing pre-flight asked for is read, not asked again."""
    if not producers:
        return fallback_prices()
    try:
        if accounts is not None:
            return prices_from_sizes(accounts.live(_token(ctx, producers[0])).sizes())
        return prices_from_api(_client(ctx, producers[0], retry))
    except InfraApplyError as exc:
        ctx.say(f"infra-apply: warning: cost: {exc.message}; using {TABLE_SOURCE}")
        return fallback_prices()


def _token(ctx: Context, producer: str) -> str:
    from infra_apply.cloud.pat import do_token, token_env

    # Pre-flight has already warned about the PAT file if there was anything to say.
    token = token_env(ctx.env, producer, lambda _line: None).get("DIGITALOCEAN_TOKEN") or do_token(ctx.env)
    if not token:
        raise InfraApplyError(f"no DigitalOcean token for producer {producer}")
    return token


def _client(ctx: Context, producer: str, retry: Retry | None) -> Client:
    from infra_apply.cloud import do_api

    token = _token(ctx, producer)
    endpoint = ctx.env.get(do_api.ENDPOINT_VAR) or do_api.DEFAULT_ENDPOINT
    retry = retry or do_api.Retry(retries=RETRIES, max_wait=10.0)
    return do_api.Client(token, endpoint, timeout=TIMEOUT_SECONDS, retry=retry)
