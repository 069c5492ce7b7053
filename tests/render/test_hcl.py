"""hcl.py: the one place HCL text is produced or escaped."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra_apply.commands.adopt import Adoption, write_imports
from infra_apply.errors import InfraApplyError
from infra_apply.manifests.model import Database, Droplet, ProducerModel
from infra_apply.render import hcl
from infra_apply.render.module import Ledger, render_producer
from infra_apply.runtime.state import Backend
from infra_apply.sandbox.install import cli_config_text


@pytest.mark.parametrize(
    ("raw", "literal"),
    [
        ("plain", '"plain"'),
        ('a"b\\c', '"a\\"b\\\\c"'),
        ("${var.x}", '"$${var.x}"'),
        ("%{ if true }x%{ endif }", '"%%{ if true }x%%{ endif }"'),
        ("$$", '"$$"'),
        ("line\nbreak\t\r", '"line\\nbreak\\t\\r"'),
        ("\x00\x1b", '"\\u0000\\u001b"'),
        ("ünï €", '"ünï €"'),
    ],
)
def test_string(raw: str, literal: str) -> None:
    assert hcl.string(raw) == literal


@pytest.mark.parametrize("good", ["a", "ct_edge", "uvlava-pg", "_x", "A1"])
def test_ident_passes_identifiers_unchanged(good: str) -> None:
    assert hcl.ident(good) == good


@pytest.mark.parametrize("bad", ["", "1a", "a b", "a\n", "a.b", 'a"', "${x}", "é", "a}"])
def test_ident_refuses_anything_else(bad: str) -> None:
    with pytest.raises(InfraApplyError, match="not an HCL identifier"):
        hcl.ident(bad)


@pytest.mark.parametrize("bad", ["x", "a.", ".a", "a.b c", "a.b\n", "a.b[0]"])
def test_address_refuses_what_is_not_type_dot_name(bad: str) -> None:
    with pytest.raises(InfraApplyError, match="not a Terraform resource address"):
        hcl.address(bad)
    assert hcl.address("digitalocean_droplet.ct_edge") == "digitalocean_droplet.ct_edge"


def test_a_template_refuses_a_bad_identifier_instead_of_writing_it() -> None:
    imports = [{"name": "x", "address": "digitalocean_droplet.a b", "id": "1"}]
    with pytest.raises(InfraApplyError):
        hcl.render("imports.tf.j2", imports=imports)


def test_slug_is_injective_and_an_identifier() -> None:
    names = ["uvlava-pg", "uvlava_pg", "Uvlava-PG", "a__b", "a_b", "a.b", "a b", "1db", "", "ä"]
    slugs = [hcl.slug(n) for n in names]
    assert len(set(slugs)) == len(names)
    assert all(hcl.is_ident(s) for s in slugs)


def test_align_equals_matches_terraform_fmt_groups() -> None:
    assert hcl.align_equals("  a = 1\n  bbb = 2\n\n  cc = 3\n") == "  a   = 1\n  bbb = 2\n\n  cc = 3\n"


def fmt_clean(text: str, tmp_path: Path, name: str) -> bool:
    path = tmp_path / name
    path.write_text(text, "utf-8")
    terraform = shutil.which("terraform")
    assert terraform is not None
    done = subprocess.run([terraform, "fmt", "-check", "-diff", str(path)], capture_output=True, text=True)
    return done.returncode == 0


def test_backend_block_is_fmt_clean_and_escapes_every_value(tmp_path: Path) -> None:
    backend = Backend("s3", bucket='b"${x}', endpoint="https://e.example", region="nyc3", key_prefix="p")
    text = backend.hcl("ct")
    assert text is not None
    assert 'bucket                      = "b\\"$${x}"' in text
    assert 'key                         = "p/ct/terraform.tfstate"' in text
    assert 'endpoints                   = { s3 = "https://e.example" }' in text
    assert fmt_clean(text, tmp_path, "backend.tf")
    assert Backend("local").hcl("ct") is None


def test_imports_file_is_fmt_clean_sorted_and_quoted(tmp_path: Path) -> None:
    target = tmp_path / "imports.tf"
    write_imports(
        target,
        [
            Adoption("digitalocean_droplet.b", "com.uvlava.ct.b", "2"),
            Adoption("digitalocean_droplet.a", 'com.uvlava.ct."a"', "1"),
        ],
    )
    text = target.read_text("utf-8")
    assert text.index("digitalocean_droplet.a") < text.index("digitalocean_droplet.b")
    assert '# "com.uvlava.ct.\\"a\\""' in text and 'id = "1"' in text
    assert fmt_clean(text, tmp_path, "check.tf")


def test_sandbox_cli_config_escapes_the_mirror_path(tmp_path: Path) -> None:
    text = cli_config_text(Path('/tmp/we"ird/${x}'))
    assert 'path    = "/tmp/we\\"ird/$${x}"' in text
    assert fmt_clean(text, tmp_path, "terraformrc.tf")


def test_module_file_reads_a_file_beside_the_module_and_nothing_else() -> None:
    from infra_apply.render.hcl import module_file

    assert module_file("user-data/base.yaml") == 'file("${path.module}/user-data/base.yaml")'
    for bad in ("../x", "user-data/${x}", "/etc/passwd", "a//b", 'a"b', "a\nb", ""):
        with pytest.raises(InfraApplyError):
            module_file(bad)


# --- templates align their own `=` (no pass over the rendered text) --------------------------


def _droplet(name: str, **extra: object) -> Droplet:
    return Droplet(name, "ct", "@ct/.infra.yaml", hosts=(name.rsplit(".", 1)[-1],), **extra)  # type: ignore[arg-type]


def _aligned(text: str) -> bool:
    return hcl.align_equals(text) == text


def test_every_attribute_group_comes_out_aligned_as_terraform_fmt_puts_it() -> None:
    """Droplets with and without SSH keys and monitoring (the groups whose width changes), GPU
    droplets, databases, a backend with and without an endpoint, the sandbox CLI config: each
    rendered text is already what ``terraform fmt`` alignment would make of it."""
    droplets = (
        _droplet("com.uvlava.ct.a"),
        _droplet("com.uvlava.ct.b", ssh_keys=("ops",)),
        _droplet("com.uvlava.ct.c", monitoring=True),
        _droplet("com.uvlava.ct.d", ssh_keys=("ops", "deploy"), monitoring=True),
        _droplet("com.uvlava.ct.gpu", gpu=True, ssh_keys=("ops",)),
    )
    db = Database("main-pg", "app_db", "app_user", "app", "production", "ct", "@ct/app/.infra.yaml")
    rendered = render_producer(ProducerModel("ct", droplets, (db,)), Ledger())
    texts = [t for name, t in rendered.files.items() if name.endswith(".tf")]
    assert len(texts) >= 7
    texts += [
        text
        for endpoint in ("", "https://e.example")
        if (text := Backend("s3", bucket="b", endpoint=endpoint).hcl("ct")) is not None
    ]
    texts.append(cli_config_text(Path("/tmp/mirror")))
    for text in texts:
        assert _aligned(text), text
    assert "  name     = " in rendered.files["droplets.tf"]  # b: ssh_keys is the widest key
    assert "  name   = " in rendered.files["droplets.tf"]  # a: neither


def test_render_writes_the_template_as_it_renders(monkeypatch: pytest.MonkeyPatch) -> None:
    """No second pass over the text (it cost as much as rendering 300 droplets): a template's
    own spacing is kept, so a template must align itself."""

    def second_pass(text: str) -> str:
        raise AssertionError("rendered text passed through align_equals")

    monkeypatch.setattr(hcl, "align_equals", second_pass)
    text = hcl.render("_import.j2", address="digitalocean_droplet.a", id="1")
    assert text == 'import {\n  to = digitalocean_droplet.a\n  id = "1"\n}\n'


TRICKY = list('a"\\$%{}\n\x00\x7f\u2028\ufeff\ud800é\U0001f600 ')


@given(st.text(alphabet=st.sampled_from(TRICKY), max_size=12))
def test_string_fast_path_is_the_escaping_loop(text: str) -> None:
    assert hcl.string(text) == '"' + hcl._escape_each(text) + '"'


@pytest.mark.parametrize("template", sorted(p.name for p in hcl.templates_dir().iterdir()))
def test_every_template_writes_its_attributes_aligned(template: str) -> None:
    """A template added later must align its own `=` too: its literal attribute lines, with every
    optional line present (the lines holding only a {% tag %} dropped), are as fmt aligns them."""
    source = (hcl.templates_dir() / template).read_text("utf-8")
    lines = [line for line in source.split("\n") if not line.strip().startswith(("{%", "{#"))]
    text = "\n".join(lines)
    assert _aligned(text), hcl.align_equals(text)
