"""The house: one installed import name, an app digest that pins only runtime code, a ground floor
without side effects, and a wheel that deploys the same app as a checkout."""

import hashlib
import io
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from fedshop.core.flower_private import build_fab_from_disk
from fedshop.operations.app_bundle import RUNTIME_PACKAGES, app_digest, build_fab, runtime_files, write_app
from tests.conftest import REPO


def _edited(path: Path, extra: bytes) -> bytes:
    original = path.read_bytes()
    path.write_bytes(original + extra)
    return original


def test_the_digest_changes_with_runtime_code_and_only_then(tmp_path: Path) -> None:
    pinned = app_digest()
    documents = [REPO / "README.md", REPO / "benchmarks" / "quality.py", REPO / "tests" / "test_settings.py"]
    originals = {path: _edited(path, b"\n# an edit that is not runtime code\n") for path in documents}
    stray = REPO / "client" / "NOTES.md"
    try:
        stray.write_text("a merchant's notes beside the code\n")
        assert app_digest() == pinned, "a README, benchmark, test or notes edit changed the app's digest"
    finally:
        for path, content in originals.items():
            path.write_bytes(content)
        stray.unlink(missing_ok=True)
    runtime = REPO / "models" / "layout.py"
    original = _edited(runtime, b"\n# a change to runtime code\n")
    try:
        assert app_digest() != pinned, "a change to the models did not change the app's digest"
    finally:
        runtime.write_bytes(original)
    assert app_digest() == pinned


def test_the_app_holds_every_module_the_two_apps_import_and_no_tools() -> None:
    """Import the ServerApp and the ClientApp in a fresh process: every fedshop module they load is in
    the bundle, and the bundle holds no CLI, service, simulation or operations code."""
    script = ("import sys, fedshop.server.app, fedshop.client.node.app; print('\\n'.join("
              "n.replace('.', '/') + ('/__init__.py' if hasattr(m, '__path__') else '.py') "
              "for n, m in sys.modules.items() if n == 'fedshop' or n.startswith('fedshop.')))")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            cwd="/").stdout.split()
    bundled = set(runtime_files())
    assert len(loaded) > 50 and not set(loaded) - bundled, f"imported but not bundled: {set(loaded) - bundled}"
    assert all(name.split("/")[1] in {"__init__.py", *(p.split(".")[1] for p in RUNTIME_PACKAGES)} for name in bundled)
    names = zipfile.ZipFile(io.BytesIO(build_fab())).namelist()
    tools = ("fedshop/cli/", "fedshop/operations/", "fedshop/service", "fedshop/simulation")
    assert "pyproject.toml" in names and not any(n.startswith(tools) for n in names)


def test_flwr_run_builds_the_same_fab_from_the_written_app(tmp_path: Path) -> None:
    """``fedshop app build`` writes the files ``flwr run`` packs: Flower's own build of that folder has
    the digest the nodes pin."""
    assert hashlib.sha256(build_fab_from_disk(write_app(tmp_path / "app"))).hexdigest() == app_digest()


def test_importing_the_ground_floor_changes_no_environment() -> None:
    script = ("import os; before = dict(os.environ); import fedshop, fedshop.core.settings, fedshop.core.protocol, "
              "fedshop.core.files; assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items()); "
              "import sys; assert not [m for m in sys.modules if m.startswith('fedshop.') and not "
              "m.startswith('fedshop.core')], sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", script], check=True, cwd="/",
                   env={"PATH": "/usr/bin:/bin"})


@pytest.mark.slow
def test_a_wheel_installs_one_top_level_package_and_deploys_the_same_app(tmp_path: Path) -> None:
    """Build the wheel, install it into a fresh virtualenv (its dependencies from this one) and compute the
    app's digest there: the same as this checkout's, and `fedshop` is the only top-level package."""
    left_before = (REPO / "build").exists()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(REPO)], check=True, cwd=tmp_path)
    if not left_before:  # setuptools builds in the checkout's build/: leave the checkout as it was
        shutil.rmtree(REPO / "build", ignore_errors=True)
    wheel, = (tmp_path / "dist").glob("fedshop-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        top_level = next(n for n in archive.namelist() if n.endswith(".dist-info/top_level.txt"))
        assert archive.read(top_level).decode().split() == ["fedshop"]
        assert {name.split("/")[0] for name in archive.namelist() if ".dist-info/" not in name} == {"fedshop"}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)], check=True)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    installed = {p.name for p in site.iterdir() if not p.name.endswith((".dist-info", ".pth"))
                 and p.name not in {"pip", "_distutils_hack", "setuptools", "pkg_resources", "__pycache__"}}
    assert installed == {"fedshop"}, installed
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # flwr and friends, not fedshop
    where = subprocess.run([str(python), "-c", "import fedshop; print(fedshop.__file__)"], capture_output=True,
                           text=True, check=True, cwd=tmp_path).stdout.strip()
    assert Path(where).is_relative_to(site), where
    digest = subprocess.run([str(python), "-c", "from fedshop.operations.app_bundle import app_digest; "
                             "print(app_digest())"], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert digest.stdout.strip() == app_digest()
