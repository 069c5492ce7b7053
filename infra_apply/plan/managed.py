"""What infra-apply manages: the tags it puts on every droplet (``tags.py``), and the managed
resources of a Terraform state (a plan's prior state included).
"""

from __future__ import annotations

from collections.abc import Iterator

from infra_apply.plan.parse import JsonObject, json_dict, json_list
from infra_apply.plan.tags import (
    MANAGED_TAG,
    PRODUCER_TAG,
    is_managed,
    is_producers,
    producer_tag,
    tagged_producer,
)

# The tag rule lives in tags.py (render loads it without the plan parser); importable from here.
__all__ = [
    "MANAGED_TAG",
    "PRODUCER_TAG",
    "is_managed",
    "is_producers",
    "prior_resources",
    "producer_tag",
    "state_resources",
    "tagged_producer",
]


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
