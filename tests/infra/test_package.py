"""The deployment package, built as azd and Core Tools build it, works on its own.

A clean folder holds only what ``.funcignore`` lets through (gitignore semantics, as both tools
read it); a venv gets ``requirements.txt`` and nothing else (the Flex remote build installs only
that). In it, ``function_app`` must index the same functions as in the repository, every module
the deployed code imports — lazily inside a function too — must resolve, and every file a
template, an example or a doc gives as a setting's value must be in the package. A dev-only
import, a ``.funcignore`` line that drops a documented rules file, or a missing dependency fails
here instead of at the customer's first event.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
import zipfile
from functools import cache
from pathlib import Path

import pathspec
import pytest

from tests.support import ROOT

pytestmark = pytest.mark.infra

# Settings whose value is a path inside the deployed app (shared.config.app_file resolves them).
FILE_SETTINGS = ("RESPONSE_RULES_FILE", "RISK_CONFIG_FILE")
# Where a value for one of them is given: template defaults and descriptions, examples, docs.
SETTING_SOURCES = (
    "infra/main.bicep",
    "infra/main.parameters.json",
    "infra/terraform/variables.tf",
    "infra/terraform/terraform.tfvars.example",
    "docs/configuration.md",
    "docs/deploy.md",
    "docs/risk-and-response.md",
    "README.md",
)
_NAMES = "|".join(
    {n for s in FILE_SETTINGS for n in (s, s.lower(), re.sub(r"_(\w)", lambda m: m.group(1).upper(), s.lower()))}
)
# `RESPONSE_RULES_FILE=samples/x.json`, `response_rules_file = "samples/x.json"`, `(e.g. samples/x.json)` …
FILE_VALUE = re.compile(rf"(?:{_NAMES})\b[^\n]*?[\s\"'=(`]((?:[\w.-]+/)*[\w.-]+\.json)\b")

# Whatever `function_app` indexes, by name and trigger kind: printed by the same code in both places.
INDEX_SCRIPT = """
import json, function_app
print(json.dumps(sorted([f.get_function_name(), f.get_trigger().get_binding_name()]
                        for f in function_app.app.get_functions())))
"""
# Every module the package imports (also inside functions): which of them cannot be found.
IMPORTS_SCRIPT = """
import ast, importlib.util, json, pathlib, sys
root = pathlib.Path.cwd()
local = {p.name for p in root.iterdir() if p.is_dir()} | {p.stem for p in root.glob("*.py")}
missing = set()
for path in root.rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
        for name in names:
            top = name.split(".")[0]
            if top in local or top == "__future__":
                continue
            if importlib.util.find_spec(top) is None:
                missing.add(f"{top} ({path.relative_to(root)})")
print(json.dumps(sorted(missing)))
"""


def funcignore() -> pathspec.GitIgnoreSpec:
    lines = (ROOT / ".funcignore").read_text().splitlines()
    return pathspec.GitIgnoreSpec.from_lines(lines)


def packaged_files(root: Path, ignore: pathspec.GitIgnoreSpec) -> list[str]:
    """The project's files a deployment package holds: tracked or not, minus what .funcignore drops."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        # a directory ignored as a whole is not walked (`.venv` is a symlink to a large tree)
        dirnames[:] = [d for d in dirnames if d != ".git" and not ignore.match_file(f"{(rel_dir / d).as_posix()}/")]
        for name in filenames:
            rel = (rel_dir / name).as_posix()
            if not ignore.match_file(rel):
                out.append(rel)
    return sorted(out)


@cache
def package(tmp: Path) -> Path:
    """Zip what azd/Core Tools would upload, and extract it into a clean folder."""
    archive = tmp / "package.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for rel in packaged_files(ROOT, funcignore()):
            z.write(ROOT / rel, rel)
    out = tmp / "wwwroot"
    with zipfile.ZipFile(archive) as z:
        z.extractall(out)
    return out


@cache
def runtime_python(tmp: Path) -> Path:
    """A venv with requirements.txt only (pip's cache makes a second run fast and mostly offline)."""
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    out = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", "requirements.txt"],
        cwd=package(tmp),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return python


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("package")


def run(python: Path | str, script: str, cwd: Path) -> object:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}  # nothing of the dev env
    out = subprocess.run(
        [str(python), "-E", "-s", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ the package's content
def test_funcignore_is_read_with_gitignore_semantics() -> None:
    ignore = funcignore()
    assert ignore.match_file("tests/unit/test_x.py") and ignore.match_file("shared/__pycache__/x.pyc")
    assert ignore.match_file("local.settings.json") and not ignore.match_file("shared/local.settings.json.py")
    assert not ignore.match_file("function_app.py") and not ignore.match_file("host.json")


def test_every_file_a_setting_is_given_is_in_the_package(workdir: Path) -> None:
    given: dict[str, str] = {}
    for source in SETTING_SOURCES:
        for m in FILE_VALUE.finditer((ROOT / source).read_text()):
            if not m.group(1).startswith("my-"):  # the operator's own file, named as a placeholder
                given.setdefault(m.group(1), source)
    assert "samples/response-rules.json" in given, "the documented example is found by the scan"
    root = package(workdir)
    missing = {path: source for path, source in given.items() if not (root / path).is_file()}
    assert missing == {}, "a setting's documented value is not deployed"


def test_the_package_holds_the_app_and_nothing_of_the_workstation(workdir: Path) -> None:
    files = set(packaged_files(ROOT, funcignore()))
    assert {"function_app.py", "host.json", "requirements.txt", "shared/config.py"} <= files
    leaked = sorted(f for f in files if f.startswith(("tests/", "tools/", "infra/", ".venv", "bench/", "docs/")))
    assert leaked == []
    assert not any(f.endswith("local.settings.json") for f in files), "local secrets would be uploaded"


def test_the_operator_code_stays_on_the_workstation() -> None:
    """The command line, the report, data-subject requests and replay run on a workstation: the
    deployed app carries none of them, nor their requirements (``tqdm``)."""
    files = set(packaged_files(ROOT, funcignore()))
    operator = sorted(f for f in files if f.startswith("ops/") or f == "shared/__main__.py" or "requirements-ops" in f)
    assert operator == [] and not any(f.startswith("shared/cli") for f in files)
    assert not {"shared/report.py", "shared/subject.py", "shared/replay.py"} & files
    assert (
        "tqdm" not in (ROOT / "requirements.txt").read_text() and "tqdm" in (ROOT / "requirements-ops.txt").read_text()
    )


# ------------------------------------------------------------------------------ the package in a clean venv
def test_the_package_indexes_the_same_functions_with_requirements_txt_only(workdir: Path) -> None:
    deployed = run(runtime_python(workdir), INDEX_SCRIPT, package(workdir))
    here = run(sys.executable, INDEX_SCRIPT, ROOT)
    assert deployed == here
    assert len(here) >= 5  # type: ignore[arg-type]


def test_nothing_the_deployed_code_imports_is_missing(workdir: Path) -> None:
    missing = run(runtime_python(workdir), IMPORTS_SCRIPT, package(workdir))
    assert missing == [], "imported by deployed code but not in requirements.txt"
