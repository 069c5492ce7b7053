"""The sandbox provider's server: the provider object ``tf`` serves, and the executable's main.

A stand-in for ``registry.terraform.io/digitalocean/digitalocean`` v2.99.1: its resources are in
``infra_apply.sandbox.resources``, their attribute facts in ``infra_apply.sandbox.schema``.

tf 1.2's plan step skips the resource on create and cannot add requires-replace paths, so
``_servicer_class`` swaps in a servicer whose plan runs ``Resource.plan_change`` for create and
update alike (SDK defaults, state functions, CustomizeDiff rules) and, like every SDKv2 provider,
flags the legacy type system so Terraform tolerates planned values that differ from config
(hashed ``user_data``, lowercased ``region``).

Module-level imports stay light: the executable is started for every terraform command,
including ``terraform show -json``, and start-up time counts.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from tf import schema

from infra_apply.sandbox.resources import DATA_SOURCES, RESOURCES, Resource, cloud_path
from infra_apply.sandbox.schema import PROVIDER_ATTRS, Diags, State

PROVIDER_SOURCE = "registry.terraform.io/digitalocean/digitalocean"
PROVIDER_VERSION = "2.99.1"
TYPE_PREFIX = "digitalocean_"


class DigitalOceanProvider:
    """The provider object ``tf`` serves; its block's values are accepted and ignored."""

    def full_name(self) -> str:
        return PROVIDER_SOURCE

    def get_model_prefix(self) -> str:
        return TYPE_PREFIX

    def get_provider_schema(self, diags: Diags) -> Any:
        return schema.Schema(attributes=[attr.to_schema() for attr in PROVIDER_ATTRS])

    def validate_config(self, diags: Diags, config: State) -> None:
        """Nothing to check: token and endpoints mean nothing to the sandbox."""

    def configure_provider(self, diags: Diags, config: State) -> None:
        cloud_path(diags)

    def get_resources(self) -> list[type[Resource]]:
        return list(RESOURCES)

    def get_data_sources(self) -> list[type[Resource]]:
        return list(DATA_SOURCES)

    def get_functions(self) -> list[type[Any]]:
        return []

    def new_resource(self, klass: type[Resource]) -> Resource:
        return klass(self)

    def new_data_source(self, klass: type[Resource]) -> Resource:
        return klass(self)

    def new_function(self, klass: type[Any]) -> Any:
        return klass(self)


# ---------------------------------------------------------------- gRPC servicer


def _servicer_class() -> type[Any]:
    """tf's servicer with a plan step that runs for creates too and reports our replace paths.

    Built on demand because ``tf.provider`` imports grpc, which only the server needs.
    """
    from tf.gen import tfplugin_pb2 as pb
    from tf.iface import CreateContext, DeleteContext, UpdateContext
    from tf.provider import ProviderServicer, _decode_state, _encode_state
    from tf.utils import Diagnostics, _to_attribute_path

    class SandboxServicer(ProviderServicer):  # type: ignore[misc]
        def _decoded(
            self, diags: Any, type_name: str, *states: Any
        ) -> tuple[Any, Any, list[tuple[Any, Any]]]:
            """The type's attributes and blocks, and each encoded state decoded against them."""
            attrs = self._get_res_attrs(type_name)
            blocks = self._get_res_blocks(type_name)
            return attrs, blocks, [_decode_state(diags, attrs, blocks, state) for state in states]

        def PlanResourceChange(self, request: Any, context: Any) -> Any:
            response = pb.PlanResourceChange.Response
            type_name = request.type_name
            diags = Diagnostics()
            attrs, blocks, decoded = self._decoded(
                diags, type_name, request.prior_state, request.proposed_new_state
            )
            (_, prior), (_, proposed) = decoded
            if diags.has_errors() or proposed is None:
                # A destroy plan: the planned state is null.
                return response(diagnostics=diags.to_pb(), legacy_type_system=True)
            resource = self.app.new_resource(self._get_res_cls(type_name))
            planned = resource.plan_change(diags, prior, proposed)
            replace = resource.replace_paths(prior, planned) if prior is not None else []
            return response(
                # No old encoding to reuse: tf would turn a planned [] back into a proposed null.
                planned_state=_encode_state(attrs, blocks, planned, None),
                requires_replace=[_to_attribute_path([name]) for name in replace],
                diagnostics=diags.to_pb(),
                legacy_type_system=True,
            )

        def ApplyResourceChange(self, request: Any, context: Any) -> Any:
            # tf's own, plus the configuration for the resource: the planned state holds
            # user_data as its SHA-1 (the StateFunc), while the create must send the text itself,
            # as the SDK does from the configuration.
            response = pb.ApplyResourceChange.Response
            type_name = request.type_name
            diags = Diagnostics()
            attrs, blocks, decoded = self._decoded(
                diags, type_name, request.prior_state, request.planned_state, request.config
            )
            (_, prior), (planned_enc, planned), (_, config) = decoded
            if diags.has_errors():
                return response(diagnostics=diags.to_pb(), legacy_type_system=True)
            resource = self.app.new_resource(self._get_res_cls(type_name))
            resource.config = config
            if prior is None and planned is not None:
                new_state = resource.create(CreateContext(diags, type_name), planned)
            elif prior is not None and planned is None:
                new_state = resource.delete(DeleteContext(diags, type_name), prior)
            else:
                new_state = resource.update(UpdateContext(diags, type_name), prior, planned)
            return response(
                new_state=_encode_state(attrs, blocks, new_state, old=planned_enc),
                diagnostics=diags.to_pb(),
                legacy_type_system=True,
            )

    return SandboxServicer


def _load_tls(path: Path) -> tuple[bytes, Any] | None:
    """The installed server certificate as tf's runner wants it, or None when unusable.

    Reading a prepared certificate skips importing ``cryptography`` and parsing or making a
    certificate, which tf otherwise does on every start.
    """
    import base64
    import json
    import time

    import grpc

    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record["not_after"] - time.time() < 3600:
            return None
        chain = base64.b64decode(record["cert_der_b64"])
        pair = (record["key_pem"].encode(), record["cert_pem"].encode())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    credentials = grpc.ssl_server_credentials([pair], require_client_auth=False)
    return chain, credentials


PARENT_CHECK_SECONDS = 0.5


def exit_with_parent() -> None:
    """End this process when the Terraform that started it dies.

    Terraform stops its providers when it ends normally; when it is killed outright they would
    otherwise be reparented and serve an empty socket forever. On Linux the kernel signals us
    the moment the parent goes (PR_SET_PDEATHSIG); everywhere a watchdog thread notices the
    parent pid change. The signal is also sent when merely the parent *thread* that started us
    ends, so it only ends the process once the parent pid has really changed.
    """
    import os
    import signal
    import threading

    parent = os.getppid()

    def orphaned() -> bool:
        return os.getppid() != parent

    def on_parent_death(_signum: int, _frame: object) -> None:
        if orphaned():
            os._exit(1)

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError, ValueError):
            import ctypes

            signal.signal(signal.SIGUSR2, on_parent_death)
            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, int(signal.SIGUSR2), 0, 0, 0)

    def watch() -> None:
        while not orphaned():
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    if orphaned():  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _stop_on_sigint() -> None:
    """The shared provider (``--dev``, reattach.py) is stopped with SIGINT, which ends its
    server and removes its socket folder. A process started with SIGINT ignored (a background
    job of a script, as CI runners start them) passes that on, and Python keeps it ignored: the
    stop would then wait its whole timeout and kill the server, leaving the folder behind."""
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)


def _keep_serving_on_stop(runner: Any) -> None:
    """Terraform's Ctrl-C sends StopProvider and then waits for the operations in flight; tf
    stops its server right there, which kills a create between the cloud's answer and
    Terraform's record of it (a droplet Terraform never hears of). Like SDKv2 providers, keep
    serving until Terraform shuts the plugin down; the operations here are short."""
    base = runner._ShutdownInterceptor

    class Interceptor(base):  # type: ignore[misc, valid-type]
        def intercept_service(self, continuation: Any, details: Any) -> Any:
            if details.method == "/tfplugin6.Provider/StopProvider":
                return continuation(details)
            return super().intercept_service(continuation, details)

    runner._ShutdownInterceptor = Interceptor


def main(tls_file: str | None = None) -> None:
    """Serve the provider: what the launcher ``install`` writes runs (Terraform starts it as
    ``terraform-provider-digitalocean`` from the sandbox mirror, never from PATH).

    ``tls_file`` is the certificate ``install`` prepared; without it (or when it is unusable)
    tf makes its own as usual.
    """
    import os

    import tf.provider
    from tf import runner

    exit_with_parent()
    if "--dev" in sys.argv:
        _stop_on_sigint()
    # run_provider imports ProviderServicer from tf.provider when it is called.
    tf.provider.ProviderServicer = _servicer_class()
    _keep_serving_on_stop(runner)
    if tls_file is not None:
        make_certificate = runner._self_signed_cert

        def certificate() -> tuple[bytes, Any]:
            return _load_tls(Path(tls_file)) or make_certificate()

        runner._self_signed_cert = certificate
    runner.run_provider(DigitalOceanProvider(), sys.argv)
    # The server has stopped and every cloud write is complete; skip interpreter teardown
    # (thread-pool joins, module finalisers) that Terraform would otherwise wait for.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
