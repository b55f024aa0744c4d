"""A copy of the service code taken when the benchmark starts.

Other people may edit the working tree while a run of 15 minutes is going on, and
every service process imports the code afresh when it starts. So the processes run
from this copy, and one run measures one version: the one described by
`snapshot_code`'s return value. The benchmark process itself imports the few
service modules it uses (stream scripts, event parsing) from the working tree when
it starts, just before the copy is taken.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

__all__ = ["snapshot_code"]

_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")
_MAX_LISTED_FILES = 10


def _packages(repo_root: Path) -> list[str]:
    """Return the wheel's packages from pyproject.toml, plus this benchmark package."""
    pyproject = tomllib.loads((repo_root / "pyproject.toml").read_text(encoding="utf-8"))
    wheel = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]
    return [*wheel["packages"], "benchmarks"]


def _git(repo_root: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=repo_root, capture_output=True, text=True, check=False
    )
    # Strip only newlines, because a `status --porcelain` line may start with a space.
    return result.stdout.rstrip("\n") if result.returncode == 0 else ""


def _describe_version(repo_root: Path, packages: list[str]) -> str:
    """Return the git commit and the uncommitted paths in the service packages."""
    commit = _git(repo_root, "rev-parse", "--short", "HEAD").strip()
    if not commit:
        return "unknown (not a git checkout)"
    service_paths = tuple(f"{package}/" for package in packages if package != "benchmarks")
    changed = [
        line[3:]
        for line in _git(repo_root, "status", "--porcelain").splitlines()
        if line[3:].startswith(service_paths) or line[3:] == "pyproject.toml"
    ]
    if not changed:
        return f"git {commit}, no uncommitted changes in the service packages"
    listed = ", ".join(changed[:_MAX_LISTED_FILES])
    if len(changed) > _MAX_LISTED_FILES:
        listed += ", …"
    return f"git {commit} plus uncommitted changes, as on disk at the start: {listed}"


def snapshot_code(repo_root: Path, destination: Path) -> str:
    """Copy the service packages and pyproject.toml to `destination`, and describe the version."""
    packages = _packages(repo_root)
    version = _describe_version(repo_root, packages)
    destination.mkdir(parents=True)
    for package in packages:
        shutil.copytree(repo_root / package, destination / package, ignore=_IGNORED)
    shutil.copy2(repo_root / "pyproject.toml", destination / "pyproject.toml")
    return version
