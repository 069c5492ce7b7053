"""infra-apply.toml: every table as frozen data, every mistake one located line (exit 1)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from infra_apply.errors import InfraApplyError
from infra_apply.manifests import config
from infra_apply.manifests.config import USER_DATA_LIMIT, ConfigError, Where
from tests.conftest import EXAMPLE_TREE, base_tree, cli_env, project, run_cli, write_tree

CLOUD_CONFIG = "#cloud-config\npackages: [wireguard-tools]\n"


def tree(tmp_path: Path, toml: str, **files: str | bytes) -> Path:
    root = write_tree(tmp_path / "root", {**base_tree(), "infra-apply.toml": toml})
    for rel, content in files.items():
        write_tree(root, {rel.replace("__", "/"): content})
    return root


def test_the_example_configuration() -> None:
    c = config.load(EXAMPLE_TREE, {})
    assert c.path == "infra-apply.toml"
    assert c.droplets.ssh_keys == ("ops-2026",) and c.droplets.monitoring is True
    assert c.droplets.user_data is not None
    assert c.droplets.user_data.source == "cloud-init/base.yaml"
    assert c.droplets.user_data.text == (EXAMPLE_TREE / "cloud-init/base.yaml").read_text()
    # an override replaces the keys it names and keeps the other defaults
    ct = c.for_producer("ct")
    assert (ct.ssh_keys, ct.monitoring) == (("ops-2026", "ct-deploy"), True)
    assert ct.user_data == c.droplets.user_data
    assert ct.ssh_keys_at == Where("infra-apply.toml", 10, 1)
    assert c.for_producer("quinn") == c.droplets
    # the sandbox account has every key the configuration names, and the default cluster
    assert c.sandbox.ssh_keys == ("ct-deploy", "ops-2026")
    assert c.sandbox.clusters == ("uvlava-pg",)


def test_the_example_trusts_its_hosts_tag_and_the_operator() -> None:
    [cluster] = config.load(EXAMPLE_TREE, {}).clusters.values()
    assert (cluster.name, cluster.owner, cluster.allow) == ("uvlava-pg", "quinn", ("203.0.113.4/32",))
    assert cluster.tag == "db-uvlava-pg" and cluster.at == Where("infra-apply.toml", 19, 1)


def test_no_file_is_the_empty_configuration(tmp_path: Path) -> None:
    c = config.load(tmp_path, {})
    assert c == config.Config()
    assert c.for_producer("ct").ssh_keys == () and c.backend(sandbox=False).kind == "local"


def test_infra_apply_config_names_the_file(tmp_path: Path) -> None:
    root = tree(tmp_path, "")
    other = tmp_path / "elsewhere.toml"
    other.write_text('[droplets]\nssh_keys = ["k"]\n')
    assert config.load(root, {"INFRA_APPLY_CONFIG": str(other)}).droplets.ssh_keys == ("k",)
    with pytest.raises(InfraApplyError, match=r"INFRA_APPLY_CONFIG names .* which does not exist"):
        config.load(root, {"INFRA_APPLY_CONFIG": str(tmp_path / "missing.toml")})


def test_gpu_tables_are_parsed_into_settings(tmp_path: Path) -> None:
    text = '[gpu."com.uvlava.ct.gpu"]\nsize = "gpu-h100x1-80gb"\nidle_after = "30m"\nregion = "tor1"\n'
    c = config.load(tree(tmp_path, text), {})
    [(name, s)] = c.gpu.items()
    assert (name, s.size, s.region, s.idle_after) == (
        "com.uvlava.ct.gpu",
        "gpu-h100x1-80gb",
        "tor1",
        timedelta(minutes=30),
    )
    assert c.gpu_at[name] == Where("infra-apply.toml", 1, 1)


def test_a_gpu_table_naming_no_declared_gpu_droplet_is_a_located_error(tmp_path: Path) -> None:
    from infra_apply.manifests.build import build_model
    from infra_apply.manifests.validate import validate_tree

    files = base_tree()
    files["infra-apply.toml"] += '\n[gpu."com.uvlava.ct.gpux"]\nidle_after = "10m"\n'
    files["@ct/vision/.infra.yaml"] = project("vision", service={"gpu": {"mode": "on-demand"}})
    root = write_tree(tmp_path / "tree", files)
    with pytest.raises(ConfigError) as caught:
        build_model(validate_tree(root))
    assert caught.value.format() == (
        'infra-apply.toml:6:1: error config: [gpu."com.uvlava.ct.gpux"] names no on-demand GPU droplet of '
        "the manifests (a service's gpu.droplet; declared: com.uvlava.ct.gpu)"
    )
    # named right, it renders in its table's region, never the standing hosts' nyc3
    (root / "infra-apply.toml").write_text(
        files["infra-apply.toml"].replace("gpux", "gpu") + 'region = "tor1"\n'
    )
    [gpu] = [d for p in build_model(validate_tree(root)).producers for d in p.droplets if d.gpu]
    assert (gpu.name, gpu.region, gpu.hosts) == ("com.uvlava.ct.gpu", "tor1", ("ct-gpu",))


def test_sandbox_keys_and_clusters_can_be_set(tmp_path: Path) -> None:
    text = '[droplets]\nssh_keys = ["a"]\n[sandbox]\nclusters = ["x-pg", "y-pg"]\nssh_keys = []\n'
    c = config.load(tree(tmp_path, text), {})
    assert (c.sandbox.clusters, c.sandbox.ssh_keys) == (("x-pg", "y-pg"), ())


def test_user_data_may_be_a_script_and_an_override_may_turn_it_off(tmp_path: Path) -> None:
    text = '[droplets]\nuser_data = "boot.sh"\n[producers.ct.droplets]\nuser_data = ""\n'
    root = tree(tmp_path, text, **{"boot.sh": "#!/bin/sh\necho ${HOME}\n"})
    c = config.load(root, {})
    assert c.droplets.user_data is not None and c.droplets.user_data.kind == "script"
    assert c.droplets.user_data.text == "#!/bin/sh\necho ${HOME}\n"
    assert c.for_producer("ct").user_data is None


# (config text, extra files, where, message part); where is path:line:col
BAD: dict[str, tuple[str, dict[str, str | bytes], str, str]] = {
    "unknown-table": ('[droplet]\nssh_keys = ["a"]\n', {}, "infra-apply.toml:1:1", "unknown table 'droplet'"),
    "unknown-top-key": ('ssh_keys = ["a"]\n', {}, "infra-apply.toml:1:1", "unknown setting 'ssh_keys'"),
    "unknown-droplet-key": (
        '[droplets]\nssh_keys = ["a"]\nbackups = true\n',
        {},
        "infra-apply.toml:3:1",
        "[droplets] backups: unknown setting (known: ssh_keys, monitoring, user_data)",
    ),
    "unknown-override-key": (
        '[producers.ct.droplets]\nmonitoring = true\nsize = "s-1vcpu-1gb"\n',
        {},
        "infra-apply.toml:3:1",
        "[producers.ct.droplets] size: unknown setting",
    ),
    "override-not-droplets": (
        "[producers.ct.firewalls]\nx = 1\n",
        {},
        "infra-apply.toml:1:1",
        "[producers.ct] firewalls: unknown setting (known: droplets, firewall, budget_monthly, max_increase)",
    ),
    "bad-producer-name": (
        '[producers."Ct".droplets]\nmonitoring = true\n',
        {},
        "infra-apply.toml:1:1",
        "[producers.Ct]: not a producer name",
    ),
    "unknown-sandbox-key": ('[sandbox]\nregions = ["x"]\n', {}, "infra-apply.toml:2:1", "[sandbox] regions"),
    "keys-not-a-list": ('[droplets]\nssh_keys = "ops"\n', {}, "infra-apply.toml:2:1", "a list of names"),
    "key-with-space": ('[droplets]\nssh_keys = ["ops "]\n', {}, "infra-apply.toml:2:1", "is not a name"),
    "key-twice": ('[droplets]\nssh_keys = ["a", "a"]\n', {}, "infra-apply.toml:2:1", "'a' is listed twice"),
    "monitoring-not-bool": ('[droplets]\nmonitoring = "yes"\n', {}, "infra-apply.toml:2:1", "true or false"),
    "droplets-not-a-table": ('droplets = "x"\n', {}, "infra-apply.toml:1:1", "droplets must be a table"),
    "gpu-not-a-table": ("gpu = { x = 1 }\n", {}, "infra-apply.toml:1:1", "gpu.x must be a table"),
    "gpu-bad-duration": (
        '\n[gpu."com.uvlava.ct.gpu"]\nsize = "gpu-h100x1-80gb"\nidle_after = "half an hour"\n',
        {},
        "infra-apply.toml:4:1",
        "idle_after: 'half an hour' is not a duration",
    ),
    "gpu-unknown-key": (
        '[gpu."com.uvlava.ct.gpu"]\nidle = "1m"\n',
        {},
        "infra-apply.toml:2:1",
        "idle: unknown setting",
    ),
    "gpu-nyc3": (
        '[gpu."com.uvlava.ct.gpu"]\nregion = "nyc3"\n',
        {},
        "infra-apply.toml:2:1",
        "region 'nyc3' offers no NVIDIA GPU droplets",
    ),
    "credential": (
        '[droplets]\ntoken = "FAKE-do-token_secret"\n',
        {},
        "infra-apply.toml:2:1",
        "credentials never go in infra-apply.toml",
    ),
    "dotted-key-located": (
        "[producers]\nct.droplets.backups = true\n",
        {},
        "infra-apply.toml:2:1",
        "[producers.ct.droplets] backups: unknown setting",
    ),
    "user-data-missing": (
        '\n[droplets]\nuser_data = "cloud-init/nope.yaml"\n',
        {},
        "infra-apply.toml:3:1",
        "'cloud-init/nope.yaml': no such file under the root",
    ),
    "user-data-outside": (
        '[droplets]\nuser_data = "../outside.yaml"\n',
        {},
        "infra-apply.toml:2:1",
        "resolves outside the root",
    ),
    "user-data-absolute": (
        '[droplets]\nuser_data = "/etc/passwd"\n',
        {},
        "infra-apply.toml:2:1",
        "must be a path relative to the root",
    ),
    "user-data-not-a-string": ("[droplets]\nuser_data = 1\n", {}, "infra-apply.toml:2:1", "as a string"),
    "user-data-a-folder": (
        '[droplets]\nuser_data = "cloud-init"\n',
        {"cloud-init__x.yaml": CLOUD_CONFIG},
        "infra-apply.toml:2:1",
        "not a regular file",
    ),
    "user-data-too-big": (
        '[droplets]\nuser_data = "big.yaml"\n',
        {"big.yaml": "#cloud-config\n" + "#" * USER_DATA_LIMIT},
        "infra-apply.toml:2:1",
        "over 64 KiB (65536 bytes)",
    ),
    "user-data-no-header": (
        '[droplets]\nuser_data = "u.yaml"\n',
        {"u.yaml": "packages: [wireguard-tools]\n"},
        "u.yaml:1:1",
        "error user_data: user data must start with a #cloud-config line",
    ),
    "user-data-not-utf8": (
        '[droplets]\nuser_data = "u.yaml"\n',
        {"u.yaml": b"#cloud-config\nx: \xff\n"},
        "u.yaml:1:1",
        "not UTF-8 text (byte 17)",
    ),
    "user-data-bad-yaml": (
        '[droplets]\nuser_data = "cloud-init/u.yaml"\n',
        {"cloud-init__u.yaml": "#cloud-config\npackages:\n  - a\n bad: [\n"},
        "cloud-init/u.yaml:4:2",
        "error user_data: not valid YAML",
    ),
    "user-data-not-a-mapping": (
        '[droplets]\nuser_data = "u.yaml"\n',
        {"u.yaml": "#cloud-config\n- a\n- b\n"},
        "u.yaml:2:1",
        "a #cloud-config document must be a mapping",
    ),
    "trusted-not-managed": (
        '[clusters."uvlava-pg"]\ntrusted_sources = "open"\nowner = "ct"\n',
        {},
        "infra-apply.toml:2:1",
        'trusted_sources must be "managed"',
    ),
    "trusted-no-owner": (
        '[clusters."uvlava-pg"]\ntrusted_sources = "managed"\n',
        {},
        "infra-apply.toml:1:1",
        "owner must name the producer",
    ),
    "trusted-unknown-key": (
        '[clusters."uvlava-pg"]\ntrusted_sources = "managed"\nowner = "ct"\ndroplets = []\n',
        {},
        "infra-apply.toml:4:1",
        "droplets: unknown setting (known: trusted_sources, owner, allow)",
    ),
    "trusted-ipv6": (
        '[clusters."uvlava-pg"]\ntrusted_sources = "managed"\nowner = "ct"\nallow = ["2001:db8::/32"]\n',
        {},
        "infra-apply.toml:4:1",
        "a database firewall takes no IPv6",
    ),
    "trusted-host-bits": (
        '[clusters."uvlava-pg"]\ntrusted_sources = "managed"\nowner = "ct"\nallow = ["203.0.113.4/24"]\n',
        {},
        "infra-apply.toml:4:1",
        "is not an IPv4 address or network",
    ),
    "trusted-twice": (
        '[clusters."uvlava-pg"]\ntrusted_sources = "managed"\nowner = "ct"\n'
        'allow = ["203.0.113.4", "203.0.113.4"]\n',
        {},
        "infra-apply.toml:4:1",
        "'203.0.113.4' is listed twice",
    ),
    "user-data-two-documents": (
        '[droplets]\nuser_data = "u.yaml"\n',
        {"u.yaml": "#cloud-config\na: 1\n---\nb: 2\n"},
        "u.yaml:3:1",
        "not valid YAML",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_configuration_is_one_located_error(tmp_path: Path, case: str) -> None:
    text, files, where, message = BAD[case]
    root = tree(tmp_path, text, **files)
    if case == "user-data-outside":
        (tmp_path / "outside.yaml").write_text(CLOUD_CONFIG)
    with pytest.raises(ConfigError) as caught:
        config.load(root, {})
    line = caught.value.format()
    assert line.startswith(f"{where}: error "), line
    assert message in line, line
    assert "\n" not in line and "FAKE-do-token_secret" not in line


@pytest.mark.parametrize("case", ["unknown-droplet-key", "user-data-bad-yaml", "credential"])
def test_the_cli_prints_it_on_one_line_and_exits_1(tmp_path: Path, case: str) -> None:
    text, files, where, message = BAD[case]
    root = tree(tmp_path, text, **files)
    for command in (["validate"], ["render", "--out", str(tmp_path / "out")], ["plan", "--sandbox"]):
        r = run_cli("--root", str(root), *command, env=cli_env(tmp_path))
        assert r.returncode == 1, r.stdout + r.stderr
        assert "Traceback" not in r.stderr
        [line] = [line for line in r.stderr.splitlines() if line.strip()]
        assert line.startswith(f"{where}: error ") and message in line, line
        assert "FAKE-do-token_secret" not in r.stdout + r.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "state" / "work").exists()


def test_a_user_data_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.yaml").write_text(CLOUD_CONFIG)
    root = tree(tmp_path, '[droplets]\nuser_data = "link.yaml"\n')
    (root / "link.yaml").symlink_to(tmp_path / "secret.yaml")
    with pytest.raises(ConfigError, match="resolves outside the root") as caught:
        config.load(root, {})
    assert (caught.value.path, caught.value.line) == ("infra-apply.toml", 2)


def test_a_fifo_as_user_data_is_refused_without_waiting(tmp_path: Path) -> None:
    root = tree(tmp_path, '[droplets]\nuser_data = "pipe.yaml"\n')
    os.mkfifo(root / "pipe.yaml")
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            config.load(root, {})
            outcome.append(None)
        except ConfigError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=30)  # the open is non-blocking: this returns at once, never at the timeout
    assert not worker.is_alive(), "reading a FIFO as user data blocked"
    assert isinstance(outcome[0], ConfigError) and "not a regular file" in outcome[0].message


def test_an_alias_bomb_is_parsed_without_expanding(tmp_path: Path) -> None:
    lines = ["#cloud-config", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 40)]
    root = tree(tmp_path, '[droplets]\nuser_data = "bomb.yaml"\n', **{"bomb.yaml": "\n".join(lines) + "\n"})
    # 10 * 5**39 nodes if expanded; composing keeps one node per alias
    assert config.load(root, {}).droplets.user_data is not None


def test_state_settings_keep_their_behaviour(tmp_path: Path) -> None:
    text = (
        '[state]\nbackend = "s3"\nbucket = "b"\nendpoint = "https://nyc3.digitaloceanspaces.com"\n'
        'key_prefix = "/live/"\nsandbox_key_prefix = "box"\n'
    )
    c = config.load(tree(tmp_path, text), {})
    live, box = c.backend(sandbox=False), c.backend(sandbox=True)
    assert (live.kind, live.bucket, live.key_prefix, live.region) == ("s3", "b", "live", "us-east-1")
    assert (box.kind, box.key_prefix) == ("s3", "box")
    from infra_apply.cloud.account import SandboxAccount

    assert SandboxAccount().backend(tmp_path / "root", {}) == box


def test_config_errors_are_the_error_family() -> None:
    where = Where("infra-apply.toml", 3, 1)
    assert where.error("x").format() == "infra-apply.toml:3:1: error config: x"


@pytest.mark.parametrize(
    "nested", ["a = " + "[" * 5000 + "]" * 5000, "a = " + "{b = " * 5000 + "1" + "}" * 5000]
)
def test_deeply_nested_toml_is_one_located_line(tmp_path: Path, nested: str) -> None:
    root = tree(tmp_path, nested + "\n")
    with pytest.raises(ConfigError) as caught:
        config.load(root, {})
    assert caught.value.format() == "infra-apply.toml: error config: invalid TOML: nested too deeply"
    done = run_cli("--root", str(root), "validate")
    assert done.returncode == 1
    assert done.stderr.splitlines() == ["infra-apply.toml: error config: invalid TOML: nested too deeply"]


@pytest.mark.parametrize(
    ("toml", "shown"),
    [
        ('[state]\n"k\\u001b]8;;x\\u0007" = "v"\n', "[state] k\\x1b]8;;x\\x07: unknown setting"),
        ('[droplets]\n"a\\nerror: forged" = 1\n', "[droplets] a\\nerror: forged: unknown setting"),
        ('[producers.ct]\n"m\\u009b31m" = 1\n', "[producers.ct] m\\u009b31m: unknown setting"),
        ('"x\\u001b[2J\\ny" = 1\n', "unknown setting 'x\\x1b[2J\\ny'"),
    ],
)
def test_a_hostile_toml_key_is_shown_printable_on_one_line(tmp_path: Path, toml: str, shown: str) -> None:
    root = tree(tmp_path, toml)
    with pytest.raises(ConfigError) as caught:
        config.load(root, {})
    line = caught.value.format()
    assert line.isprintable() and shown in line, line


_LOADS_YAML = (
    "import sys; from pathlib import Path; from infra_apply.manifests.config import load; "
    "from infra_apply.runtime.state import checked_state_dir; checked_state_dir([], create=False); "
    "load(Path(sys.argv[1])); print('yaml' in sys.modules)"
)


def _loads_yaml(root: Path, env: dict[str, str]) -> bool:
    """Whether a fresh process reading the config loads PyYAML (checks the user data)."""
    done = subprocess.run(
        [sys.executable, "-c", _LOADS_YAML, str(root)], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip() == "True"


def test_user_data_found_valid_is_not_parsed_by_the_next_run(tmp_path: Path) -> None:
    """Every command reads the config: cloud-init YAML a run found valid is known by its digest
    to the next one, which does not load PyYAML; a changed text, or a record another user could
    have written, is checked again."""
    root = tree(tmp_path, '[droplets]\nuser_data = "u.yaml"\n', **{"u.yaml": CLOUD_CONFIG})
    env = cli_env(tmp_path)
    cache = Path(env["INFRA_APPLY_STATE_DIR"]) / "cache"
    cache.mkdir(parents=True, mode=0o700)
    assert _loads_yaml(root, env)
    assert not _loads_yaml(root, env)
    record = cache / "cloud-config-checked"
    assert record.stat().st_mode & 0o777 == 0o600
    (root / "u.yaml").write_text(CLOUD_CONFIG + "runcmd: [hostname]\n")
    assert _loads_yaml(root, env)
    assert not _loads_yaml(root, env)
    record.chmod(0o664)
    assert _loads_yaml(root, env)
    assert not _loads_yaml(root, env)


def test_user_data_that_fails_is_never_recorded(tmp_path: Path) -> None:
    root = tree(tmp_path, '[droplets]\nuser_data = "u.yaml"\n', **{"u.yaml": "#cloud-config\n- a\n"})
    env = cli_env(tmp_path)
    (Path(env["INFRA_APPLY_STATE_DIR"]) / "cache").mkdir(parents=True, mode=0o700)
    for _ in range(2):
        with pytest.raises(ConfigError, match="must be a mapping"):
            config.load(root, env)
    assert not (Path(env["INFRA_APPLY_STATE_DIR"]) / "cache" / "cloud-config-checked").exists()


def test_no_cache_keeps_no_record_and_no_run_makes_the_state_dir(tmp_path: Path) -> None:
    root = tree(tmp_path, '[droplets]\nuser_data = "u.yaml"\n', **{"u.yaml": CLOUD_CONFIG})
    env = cli_env(tmp_path)
    state = Path(env["INFRA_APPLY_STATE_DIR"])
    assert config.load(root, env).droplets.user_data is not None
    assert not state.exists()  # the config is read before a command checks where state may go
    (state / "cache").mkdir(parents=True, mode=0o700)
    assert _loads_yaml(root, {**env, "INFRA_APPLY_NO_CACHE": "1"})
    assert not (state / "cache" / "cloud-config-checked").exists()


def test_the_same_user_data_is_parsed_once_and_a_bad_one_fails_every_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run loads the config several times (its key, the project, the backend): cloud-init
    YAML it already checked is not parsed again; a changed or broken file still is."""
    import yaml

    composed: list[str] = []
    real = yaml.compose

    def counting(text: str, Loader: object) -> object:
        composed.append(text)
        return real(text, Loader=Loader)  # type: ignore[arg-type]

    monkeypatch.setattr(yaml, "compose", counting)
    text = CLOUD_CONFIG.replace("wireguard-tools", "once-only-7f3e")
    root = tree(tmp_path, '[droplets]\nuser_data = "u.yaml"\n', **{"u.yaml": text})
    for _ in range(3):
        assert config.load(root).droplets.user_data is not None
    assert composed == [text]
    (root / "u.yaml").write_text("#cloud-config\npackages: [\n")
    for _ in range(2):
        with pytest.raises(ConfigError, match="not valid YAML"):
            config.load(root)
    assert len(composed) == 3
