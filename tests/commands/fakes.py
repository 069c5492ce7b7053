"""A fake working copy and terminal that record, in one list, every effect a verb has."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infra_apply.cloud.account import choose
from infra_apply.commands.apply import Terminal
from infra_apply.manifests.model import Droplet, ProducerModel, Service
from infra_apply.plan.parse import JsonObject
from infra_apply.render.output import Rendered
from infra_apply.runtime.workcopy import Context, Prepared, Say
from infra_apply.timing import MONOTONIC, Clock
from tests.conftest import EXAMPLE_MESH
from tests.plan_fixtures import NAMES, QUINN_MODEL, load

MC_MODEL = ProducerModel(
    name="mc",
    droplets=(
        Droplet(
            name="com.uvlava.mc.services",
            producer="mc",
            source="@mc/.infra.yaml",
            region="fra1",
            hosts=("mc-web",),
            services=(Service("mc-web", "web"),),
        ),
    ),
)
ADDRESSES = {
    "mc": {"com.uvlava.mc.services": "digitalocean_droplet.mc_services"},
    "quinn": {"com.uvlava.quinn.artifacts": "digitalocean_droplet.quinn_artifacts"},
}


def droplets_output(producer: str, name: str, hosts: list[str], droplet_id: str = "5001") -> JsonObject:
    """The ``droplets`` output as Terraform reports it after an apply."""
    return {
        name: {
            "id": droplet_id,
            "ipv4_address": "192.0.2.10",
            "ipv4_address_private": "10.116.0.10",
            "region": "fra1",
            "hosts": hosts,
            "producer": producer,
        }
    }


@dataclass
class FakeCopy:
    """A ``WorkingCopy`` answering from fixtures; each call is appended to ``events``."""

    events: list[str]
    path: Path
    plan_doc: JsonObject = field(default_factory=dict)
    changed: bool = False  # what `terraform plan -detailed-exitcode` says
    state_doc: JsonObject = field(default_factory=dict)
    outputs: Mapping[str, object] = field(default_factory=dict)
    fail: Mapping[str, Exception] = field(default_factory=dict)  # call name -> what it raises
    variables: list[Mapping[str, str]] = field(default_factory=list)
    targets: list[tuple[str, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)  # apply keeps its journal there

    def _call(self, name: str) -> None:
        self.events.append(name)
        if name in self.fail:
            raise self.fail[name]

    def init(self) -> None:
        self._call("init")

    def plan(
        self,
        *,
        variables: Mapping[str, str] | None = None,
        refresh_only: bool = False,
        targets: Sequence[str] = (),
    ) -> bool:
        self.variables.append(dict(variables or {}))
        self.targets.append(tuple(targets))
        self._call("plan")
        return self.changed

    def show(self) -> JsonObject:
        self._call("show")
        return self.plan_doc

    def state(self) -> JsonObject:
        self._call("state")
        return self.state_doc

    def apply(self, *, echo: Say | None = None) -> None:
        self._call("apply")
        if echo is not None:
            echo("Apply complete! Resources: 1 added, 0 changed, 0 destroyed.")

    def output(self, name: str) -> object:
        self._call(f"output {name}")
        return self.outputs[name]

    def refresh(self) -> None:
        self._call("refresh")

    def untaint(self, address: str) -> None:
        self._call(f"untaint {address}")

    def with_env(self, extra: Mapping[str, str]) -> FakeCopy:
        self._call("with_env")
        return self


@dataclass
class FakeTerminal:
    """Records what apply shows and asks; answers the question with ``answer``."""

    events: list[str]
    answer: bool | None = True  # None: no terminal to ask on
    shown: list[str] = field(default_factory=list)

    def terminal(self) -> Terminal:
        def show(text: str) -> None:
            self.shown.append(text)
            self.events.append("report" if text.startswith("Producer ") else "echo")

        def confirm(question: str) -> bool:
            self.events.append("confirm")
            assert self.answer is not None
            return self.answer

        return Terminal(show, confirm if self.answer is not None else None)


class Ticks:
    """A clock reading the given times in order (monotonic seconds): phase timings without
    waiting, and without asserting on a real clock. Reading past the end fails the test."""

    def __init__(self, *times: float) -> None:
        self._times = iter(times)

    def __call__(self) -> float:
        return next(self._times)


@dataclass
class World:
    """A fake working copy for one producer, and the Context a verb runs with."""

    tmp: Path
    producer: str = "mc"
    mesh: bool = True  # a mesh-hosts.json to register into
    events: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mesh:
            shutil.copy(EXAMPLE_MESH, self.mesh_path)

    @property
    def mesh_path(self) -> Path:
        return self.tmp / "mesh-hosts.json"

    def context(self, *, sandbox: bool = False, clock: Clock = MONOTONIC) -> Context:
        return Context(
            root=self.tmp / "tree",
            out=self.tmp / "generated",
            account=choose(sandbox),
            mesh_path=self.mesh_path if self.mesh else None,
            env={"INFRA_APPLY_STATE_DIR": str(self.tmp / "state")},
            say=self.said.append,
            clock=clock,
        )

    def copy(self, fixture: str | None = None, **kwargs: object) -> FakeCopy:
        plan_doc = load(fixture) if fixture is not None else {}
        return FakeCopy(self.events, self.tmp / "work" / self.producer, plan_doc, **kwargs)  # type: ignore[arg-type]

    def prepared(
        self, copy: FakeCopy, *, cloud: Path | None = None, **rendered: Mapping[str, str]
    ) -> Prepared:
        model = MC_MODEL if self.producer == "mc" else QUINN_MODEL
        fields = {"names": NAMES, "droplet_addresses": ADDRESSES[self.producer], **rendered}
        render = Rendered(self.producer, {}, **fields)  # type: ignore[arg-type]
        # a working copy prepared with the stand-in's cloud file is a sandbox run's
        return Prepared(model, render, copy, cloud, account=choose(cloud is not None))
