"""``schema``: the infra/v1 JSON Schema, for editors and CI."""

from __future__ import annotations

from infra_apply.commands import Output


def run() -> str:
    from infra_apply.manifests.validate import schema_text

    return schema_text()


def output(schema: str) -> Output:
    return Output(schema)
