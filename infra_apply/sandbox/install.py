"""Install the sandbox provider where Terraform can find it without the registry.

Everything lives under ``<state_dir>/sandbox``::

    launcher/terraform-provider-digitalocean   executable; absolute shebang to this interpreter
    provider-tls.json                          the provider's gRPC server certificate (0600)
    pycache/                                   provider bytecode when PYTHONDONTWRITEBYTECODE is set
    mirror/registry.terraform.io/digitalocean/digitalocean/*.zip   filesystem mirror (packed)
    terraformrc                                CLI config: that mirror for DigitalOcean only
    cloud.json                                 the sandbox cloud

Terraform unpacks the executable into each working copy's ``.terraform/``, so the launcher must
not find anything relative to its own path: it carries the interpreter's absolute path instead.
There is deliberately no console script: a ``terraform-provider-digitalocean`` on PATH would
pass for the real provider.

The launcher also names a long-lived server certificate made here: go-plugin insists on TLS,
and tf would otherwise import ``cryptography`` and load or make a certificate on every start,
a large share of the provider's start-up time (which every terraform command pays, including
the ``terraform show -json`` infra-apply runs after each plan).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import sys
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from infra_apply.runtime import locks
from infra_apply.runtime.fs import PRIVATE_FILE, atomic_write, private_dirs, tighten
from infra_apply.sandbox import cloud

PROVIDER_HOST = "registry.terraform.io"
PROVIDER_NAMESPACE = "digitalocean"
PROVIDER_TYPE = "digitalocean"
PROVIDER_VERSION = "2.99.1"
PROVIDER_SOURCE = f"{PROVIDER_HOST}/{PROVIDER_NAMESPACE}/{PROVIDER_TYPE}"
EXECUTABLE_NAME = f"terraform-provider-{PROVIDER_TYPE}"
DEFAULT_CLUSTERS: tuple[str, ...] = ("uvlava-pg",)

_STAMP_NAME = ".infra-apply-stamp"
TLS_FILE_NAME = "provider-tls.json"
TLS_VALID_DAYS = 365
TLS_RENEW_DAYS = 30  # renew well before expiry so a long session never sees it lapse


@dataclass(frozen=True)
class SandboxSetup:
    """Where the sandbox lives, and the environment Terraform needs to use it."""

    root: Path
    launcher: Path
    mirror: Path
    cli_config: Path
    cloud: Path
    tls: Path
    package_hash: str  # the "h1:" checksum terraform init records in .terraform.lock.hcl

    @property
    def env(self) -> dict[str, str]:
        """Variables to add to terraform's environment (only in sandbox mode)."""
        return {
            "TF_CLI_CONFIG_FILE": str(self.cli_config),
            cloud.ENV_VAR: str(self.cloud),
            "CHECKPOINT_DISABLE": "1",
            # A user's plugin cache would file the stand-in under the real provider's name and
            # version, where a later real `terraform init` without a lock file would pick it up.
            "TF_PLUGIN_CACHE_DIR": "",
        }


def install(
    state_dir: Path, clusters: Sequence[str] = DEFAULT_CLUSTERS, ssh_keys: Sequence[str] = ()
) -> SandboxSetup:
    """Make the sandbox usable: launcher, mirror, CLI config, and a cloud holding ``clusters``
    and ``ssh_keys`` (``[sandbox]`` of infra-apply.toml, never what manifests ask for).

    Idempotent and cheap when nothing changed (a stamp records what the mirror was built from).
    Clusters and keys are added to an existing cloud when missing; nothing is ever removed.
    """
    root = Path(state_dir).resolve() / "sandbox"
    launcher = root / "launcher" / EXECUTABLE_NAME
    mirror = root / "mirror"
    tls = root / TLS_FILE_NAME
    private_dirs(root, Path(state_dir).resolve())
    # Several infra-apply processes (or test workers) may install into one state dir at once.
    with locks.held(root / "install.lock", f"the sandbox provider install in {root}", timeout=120):
        _ensure_tls(tls)
        launcher_text = launcher_source(sys.executable, root)
        _write_if_changed(launcher, launcher_text, mode=0o700)
        checksum = _ensure_mirror(mirror, launcher, launcher_text)
        _write_if_changed(root / "terraformrc", cli_config_text(mirror))
        # The sandbox is private like the rest of the state dir (its registry, cloud and TLS
        # key included); this also fixes what older versions wrote group/world readable.
        tighten(root)
    setup = SandboxSetup(
        root=root,
        launcher=launcher,
        mirror=mirror,
        cli_config=root / "terraformrc",
        cloud=root / "cloud.json",
        tls=tls,
        package_hash=checksum,
    )
    cloud.seed(setup.cloud, clusters, ssh_keys)
    return setup


def sandbox_cloud(state_dir: Path, clusters: Sequence[str], ssh_keys: Sequence[str]) -> Path:
    """The sandbox cloud file (``<state_dir>/sandbox/cloud.json``), made private and seeded,
    without the provider: what pre-flight reads."""
    root = Path(state_dir).resolve() / "sandbox"
    private_dirs(root, Path(state_dir).resolve())
    path = root / "cloud.json"
    cloud.seed(path, clusters, ssh_keys)
    return path


def forget_stale_provider(workdir: Path, setup: SandboxSetup) -> bool:
    """Let ``terraform init`` in ``workdir`` pick up a rebuilt sandbox provider.

    A working copy keeps the provider it unpacked and the checksum it locked; after the mirror
    is rebuilt (another interpreter, another state dir) init refuses the new package, even with
    ``-upgrade``. This drops the stale lock entry and unpacked copy; True when it did.
    """
    lock_file = workdir / ".terraform.lock.hcl"
    unpacked = workdir / ".terraform" / "providers" / PROVIDER_SOURCE
    text = _read(lock_file) or ""
    block = re.search(rf'provider "{re.escape(PROVIDER_SOURCE)}" {{\n.*?\n}}\n', text, re.DOTALL)
    if block is not None and setup.package_hash in block.group(0):
        return False
    if block is None and not unpacked.exists():
        return False
    if block is not None:
        _write_if_changed(lock_file, text[: block.start()] + text[block.end() :])
    # Without a lock entry init would still reuse an unpacked copy of the same version.
    shutil.rmtree(unpacked, ignore_errors=True)
    return True


def launcher_source(python: str, root: Path) -> str:
    """The provider executable: this interpreter, this sandbox's certificate and bytecode."""
    return (
        f"#!{python}\n"
        "# Written by infra-apply: the sandbox DigitalOcean provider, run by the interpreter\n"
        "# that installed it (Terraform unpacks this file into .terraform/providers).\n"
        "import sys\n"
        "\n"
        "if sys.dont_write_bytecode:\n"
        "    # Without .pyc files every start recompiles the provider (about 15 ms each time);\n"
        "    # keep them in the sandbox rather than in the source tree.\n"
        f"    sys.pycache_prefix = {str(root / 'pycache')!r}\n"
        "    sys.dont_write_bytecode = False\n"
        "\n"
        "from infra_apply.sandbox.server import main\n"
        "\n"
        f"main(tls_file={str(root / TLS_FILE_NAME)!r})\n"
    )


def cli_config_text(mirror: Path) -> str:
    from infra_apply.render import hcl

    return hcl.render("terraformrc.j2", mirror=str(mirror), source=PROVIDER_SOURCE)


def _ensure_mirror(mirror: Path, launcher: Path, launcher_text: str) -> str:
    """Build the packed mirror unless it already holds this launcher; returns its h1 checksum."""
    stamp = hashlib.sha256(f"{PROVIDER_VERSION}\n{launcher_text}".encode()).hexdigest()
    stamp_file = mirror / _STAMP_NAME
    package_dir = mirror / PROVIDER_SOURCE
    archive = package_dir / f"{EXECUTABLE_NAME}_{PROVIDER_VERSION}_linux_amd64.zip"
    if archive.exists() and _read(stamp_file) == stamp:
        return package_hash(archive)
    # Stale packages would leave Terraform a choice of checksums; start from nothing.
    shutil.rmtree(package_dir, ignore_errors=True)
    from tf.runner import install_provider  # only needed when (re)building

    install_provider(
        host=PROVIDER_HOST,
        namespace=PROVIDER_NAMESPACE,
        project=PROVIDER_TYPE,
        version=PROVIDER_VERSION,
        plugin_dir=mirror,
        provider_script=launcher,
    )
    checksum = package_hash(archive)
    _fix_version_manifest(package_dir, checksum)
    _write_if_changed(stamp_file, stamp)
    return checksum


def package_hash(archive: Path) -> str:
    """Terraform's "h1:" package checksum (Go dirhash Hash1 over the archive's files)."""
    with zipfile.ZipFile(archive) as package:
        lines = "".join(
            f"{hashlib.sha256(package.read(name)).hexdigest()}  {name}\n"
            for name in sorted(package.namelist())
        )
    return "h1:" + base64.b64encode(hashlib.sha256(lines.encode()).digest()).decode()


def _fix_version_manifest(package_dir: Path, checksum: str) -> None:
    """Put real checksums in the network-mirror manifest tf writes beside the archives.

    tf records base64(sha256(script)) there, which is not an h1 checksum. The filesystem
    mirror ignores that file (Terraform hashes the archive itself), but a mirror directory
    served over HTTP would be rejected with it.
    """
    manifest_path = package_dir / f"{PROVIDER_VERSION}.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for archive in manifest["archives"].values():
        digest = hashlib.sha256((package_dir / archive["url"]).read_bytes()).hexdigest()
        archive["hashes"] = [checksum, f"zh:{digest}"]
    atomic_write(manifest_path, json.dumps(manifest, indent=2, sort_keys=True), mode=PRIVATE_FILE)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):  # missing or damaged: written afresh
        return None


def _write_if_changed(path: Path, text: str, mode: int = 0o600) -> None:
    if _read(path) == text:
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, text, mode=mode)


def _ensure_tls(path: Path) -> None:
    try:
        not_after = json.loads(path.read_text(encoding="utf-8"))["not_after"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        not_after = 0
    if not_after - time.time() > TLS_RENEW_DAYS * 86400:
        return
    record = _make_certificate()
    # The key guards only a unix socket in a private temp dir, but keep it to its owner anyway.
    atomic_write(path, json.dumps(record), mode=PRIVATE_FILE)


def _make_certificate() -> dict[str, object]:
    """A self-signed localhost certificate shaped like the one tf makes per start."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    not_after = now + timedelta(days=TLS_VALID_DAYS)
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=True,
        key_cert_sign=True,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(usage, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return {
        "key_pem": key_pem.decode(),
        "cert_pem": certificate.public_bytes(serialization.Encoding.PEM).decode(),
        "cert_der_b64": base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode(),
        "not_after": int(not_after.timestamp()),
    }
