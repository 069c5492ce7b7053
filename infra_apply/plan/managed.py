"""What infra-apply manages: the tags it puts on every droplet, and the managed resources of a
Terraform state (a plan's prior state included).

Render writes the tags; drift (orphans), the account check (``exists``) and the drift verb read
them with the same rule, so a droplet one of them counts as infra-apply's the others do too.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from infra_apply.plan.parse import JsonObject, json_dict, json_list

MANAGED_TAG = "managed-by:infra-apply"
PRODUCER_TAG = "producer:"


def producer_tag(producer: str) -> str:
    return PRODUCER_TAG + producer


def is_managed(tags: Collection[str]) -> bool:
    """A droplet carrying these tags is infra-apply's (some producer's)."""
    return MANAGED_TAG in tags


def is_producers(tags: Collection[str], producer: str) -> bool:
    """A droplet carrying these tags is infra-apply's, made for ``producer``."""
    return MANAGED_TAG in tags and producer_tag(producer) in tags


def tagged_producer(tags: Collection[str]) -> str | None:
    """The producer a droplet's tags name; None when they name none."""
    return next((t[len(PRODUCER_TAG) :] for t in tags if t.startswith(PRODUCER_TAG)), None)


def state_resources(root_module: object) -> Iterator[JsonObject]:
    """The managed resources (not data sources) of a state's root module, child modules included."""
    stack = [json_dict(root_module)]
    while stack:
        module = stack.pop()
        resources = map(json_dict, json_list(module.get("resources")))
        yield from (r for r in resources if r.get("mode") == "managed")
        stack.extend(map(json_dict, json_list(module.get("child_modules"))))


def prior_resources(plan: JsonObject) -> Iterator[JsonObject]:
    """The managed resources of a plan's (refreshed) prior state."""
    return state_resources(json_dict(json_dict(plan.get("prior_state")).get("values")).get("root_module"))
