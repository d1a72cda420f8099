"""The Flower app a run submits and a node pins: fedshop's runtime code and nothing else.

A run reaches the SuperLink as a FAB (Flower App Bundle): a zip of the app's files and its
``pyproject.toml``. The SuperLink's ServerApp runs from it, and every merchant's node compares its
SHA-256 with the digest it pinned at start (``fedshop.client.node.runtime``), so the FAB must change
when the code that runs changes, and only then. It is built here, the same way from a checkout or a
wheel install: the ``.py`` files of the installed runtime packages (:data:`RUNTIME_PACKAGES`, what
the ServerApp and the ClientApp import; not the CLI, the service or the operations around them, nor
the README, tests or benchmarks) and a ``pyproject.toml`` generated from :class:`RunSettings`, the one
source of the run config's keys and defaults. Flower's own ``build_fab_from_files`` zips them, with
its fixed dates and sorted paths, so the bytes are the same on every machine.

``fedshop app build --out DIR`` writes the same files into a directory, which Flower's own ``flwr run
DIR`` submits as this very app (same digest).
"""

import hashlib
import importlib.util
from importlib.metadata import metadata, requires
from pathlib import Path

import tomli_w

from fedshop.core.flower_private import build_fab_from_files
from fedshop.core.settings import RunSettings

DISTRIBUTION = "fedshop"
PUBLISHER = "fedshop"
RUNTIME_PACKAGES = ("fedshop.core", "fedshop.models", "fedshop.privacy", "fedshop.client", "fedshop.explain",
                    "fedshop.rundir", "fedshop.server")
SERVER_APP, CLIENT_APP = "fedshop.server.app:app", "fedshop.client.node.app:app"
PYPROJECT = "pyproject.toml"


def _package_directory(package: str) -> Path:
    """Where the installed ``package`` lives (a checkout's folder in an editable install)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{package} is not installed: install fedshop first")
    return Path(next(iter(spec.submodule_search_locations)))


def runtime_files() -> dict[str, bytes]:
    """Every ``.py`` file of the runtime packages, by its path in the app (``fedshop/...``)."""
    files = {"fedshop/__init__.py": (_package_directory("fedshop") / "__init__.py").read_bytes()}
    for package in RUNTIME_PACKAGES:
        root = _package_directory(package)
        prefix = Path(*package.split("."))
        for path in sorted(root.rglob("*.py")):
            relative = path.relative_to(root)
            if "__pycache__" not in relative.parts:
                files[(prefix / relative).as_posix()] = path.read_bytes()
    return files


def app_pyproject() -> str:
    """The app's ``pyproject.toml``: fedshop's name, version and dependencies as installed, the two
    components and the run config with :class:`RunSettings`' defaults."""
    about = metadata(DISTRIBUTION)
    dependencies = [r for r in requires(DISTRIBUTION) or [] if "extra ==" not in r]
    return tomli_w.dumps({
        "project": {"name": DISTRIBUTION, "version": about["Version"], "description": about["Summary"],
                    "license": about.get("License-Expression") or about.get("License") or "Apache-2.0",
                    "dependencies": dependencies},
        "tool": {"flwr": {"app": {"publisher": PUBLISHER,
                                  "components": {"serverapp": SERVER_APP, "clientapp": CLIENT_APP},
                                  "config": RunSettings().to_run_config()}}},
    })


def app_files() -> dict[str, bytes]:
    """The app as files: the generated ``pyproject.toml`` and the runtime code."""
    return {PYPROJECT: app_pyproject().encode(), **runtime_files()}


def build_fab() -> bytes:
    """The FAB of the installed app, byte for byte what ``flwr run`` builds from :func:`write_app`'s folder."""
    return build_fab_from_files(app_files())[0]


def app_digest() -> str:
    """SHA-256 of the installed app's FAB: the digest a node pins, so that it runs only a submission of the
    very app its merchant installed."""
    return hashlib.sha256(build_fab()).hexdigest()


def write_app(out: Path) -> Path:
    """Write the app's files into ``out`` (which must be empty or absent) for ``flwr run``; returns it."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: write the app into a new folder")
    for name, content in app_files().items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return out
