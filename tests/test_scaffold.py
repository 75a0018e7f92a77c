"""``crmkit plugin new``: the generated plugin distribution installs and passes its own tests."""

from __future__ import annotations

import ast
import json
import os
import shutil
import site
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from crmkit.cli import build_cli
from crmkit.core.errors import Conflict, ValidationError
from crmkit.core.plugins import load_plugins
from crmkit.scaffold import create_plugin, plugin_names

FILES = [
    "pyproject.toml",
    "README.md",
    ".gitignore",
    "crmkit_acme_kpi/__init__.py",
    "tests/conftest.py",
    "tests/test_plugin.py",
]
HOOKS = ["crmkit_check_client", "crmkit_cli", "crmkit_source_channels"]


def run_cli(*args: str) -> Any:
    """``crmkit ARGS`` through click's runner, without loading installed plugins."""
    plugins = load_plugins(entry_points=False)
    return CliRunner().invoke(build_cli(plugins), list(args), obj=plugins)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without switches that would change which plugins or paths load."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_") and k != "PYTHONPATH"}
    return {**env, **extra}


# -- names ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["acme-kpi", "acme_kpi", "Acme-KPI", "crmkit-acme-kpi"])
def test_names_of_a_plugin(name: str) -> None:
    assert plugin_names(name) == {
        "slug": "acme-kpi",
        "distribution": "crmkit-acme-kpi",
        "module": "crmkit_acme_kpi",
        "entry_point": "acme_kpi",
    }


@pytest.mark.parametrize(
    "name",
    ["", "1acme", "-acme", "_acme", "acme-", "acme--kpi", "acme kpi", "acme.kpi", "a/b", "é"],
)
def test_a_bad_name_is_refused_and_nothing_is_written(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        create_plugin(name, tmp_path / "out")
    assert caught.value.field == "name"
    assert "starting with a letter" in str(caught.value)
    assert not (tmp_path / "out").exists()


# -- the target folder ---------------------------------------------------------------------------
def test_a_non_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine", "utf-8")
    with pytest.raises(Conflict) as caught:
        create_plugin("acme-kpi", tmp_path)
    assert caught.value.field == "directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_a_file_in_place_of_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("mine", "utf-8")
    with pytest.raises(Conflict):
        create_plugin("acme-kpi", tmp_path / "taken")


def test_an_empty_folder_is_used(tmp_path: Path) -> None:
    result = create_plugin("acme-kpi", tmp_path)
    assert result["directory"] == str(tmp_path.resolve())
    assert (tmp_path / "pyproject.toml").is_file()


def test_the_default_folder_is_crmkit_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = create_plugin("acme_kpi")
    assert result["directory"] == str(tmp_path.resolve() / "crmkit-acme-kpi")


# -- the generated files -------------------------------------------------------------------------
@pytest.fixture
def generated(tmp_path: Path) -> Path:
    result = create_plugin("acme-kpi", tmp_path / "plugin", description="KPIs for Acme.")
    assert result == {
        "distribution": "crmkit-acme-kpi",
        "module": "crmkit_acme_kpi",
        "entry_point": "acme_kpi",
        "directory": str((tmp_path / "plugin").resolve()),
        "files": FILES,
    }
    return tmp_path / "plugin"


def test_the_generated_files_exist_and_the_python_compiles(generated: Path) -> None:
    found = sorted(p.relative_to(generated).as_posix() for p in generated.rglob("*") if p.is_file())
    assert found == sorted(FILES)
    for path in generated.rglob("*.py"):
        compile(path.read_text("utf-8"), str(path), "exec")
    assert "$" not in "".join(p.read_text("utf-8") for p in generated.rglob("*.py"))


def test_pyproject(generated: Path) -> None:
    data = tomllib.loads((generated / "pyproject.toml").read_text("utf-8"))
    assert data["build-system"]["build-backend"] == "setuptools.build_meta"
    project = data["project"]
    assert project["name"] == "crmkit-acme-kpi"
    assert project["description"] == "KPIs for Acme."
    assert project["requires-python"] == ">=3.11"
    assert project["dependencies"] == ["crmkit"]
    assert project["optional-dependencies"] == {"test": ["pytest"]}
    assert project["entry-points"] == {"crmkit": {"acme_kpi": "crmkit_acme_kpi"}}
    version = data["tool"]["setuptools"]["dynamic"]["version"]
    assert version == {"attr": "crmkit_acme_kpi.__version__"}


def test_the_module_imports_only_hookimpl_and_the_standard_library(generated: Path) -> None:
    tree = ast.parse((generated / "crmkit_acme_kpi/__init__.py").read_text("utf-8"))
    imported: list[str] = []
    for node in tree.body:  # module level only; the TYPE_CHECKING block is not run
        if isinstance(node, ast.Import):
            imported += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            imported += [f"{node.module}.{a.name}" for a in node.names]
    assert "crmkit.hookimpl" in imported
    others = {i.split(".")[0] for i in imported} - {"crmkit", "__future__"}
    assert others <= sys.stdlib_module_names
    assert [i for i in imported if i.startswith("crmkit")] == ["crmkit.hookimpl"]
    version = next(
        n.value.value
        for n in tree.body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "__version__"
    )
    assert version == "0.1.0"


def test_a_description_with_quotes_is_kept_intact(tmp_path: Path) -> None:
    text = "Tracks \"deals\" \\ the  C:\\KPI\nfolder 'now'" + " word" * 30
    create_plugin("acme", tmp_path, description=text)
    expected = " ".join(text.split())
    project = tomllib.loads((tmp_path / "pyproject.toml").read_text("utf-8"))["project"]
    assert project["description"] == expected
    module = ast.parse((tmp_path / "crmkit_acme/__init__.py").read_text("utf-8"))
    docstring = ast.get_docstring(module) or ""
    assert " ".join(docstring.split("\n\n")[0].split()) == expected
    assert expected in (tmp_path / "README.md").read_text("utf-8")


def test_a_description_with_control_characters_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        create_plugin("acme", tmp_path / "out", description="bell\x07")
    assert caught.value.field == "description"
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed")
@pytest.mark.parametrize("name", ["acme-kpi", "northwind-quarterly-kpi-board"])
def test_the_generated_code_is_ruff_clean(tmp_path: Path, name: str) -> None:
    create_plugin(name, tmp_path)
    for command in (["check"], ["format", "--check"]):
        done = subprocess.run(
            ["ruff", *command, "--no-cache", "."], cwd=tmp_path, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_generated_tests_pass_in_place(generated: Path) -> None:
    """The generated tests, run against the generated source (no install)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=generated,
        env=clean_env(PYTHONPATH=str(generated)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "11 passed" in done.stdout


# -- the command line ----------------------------------------------------------------------------
def test_cli_plugin_new_json(tmp_path: Path) -> None:
    result = run_cli("plugin", "new", "acme-kpi", str(tmp_path / "p"), "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["distribution"] == "crmkit-acme-kpi"
    assert data["module"] == "crmkit_acme_kpi"
    assert data["files"] == FILES
    assert all((Path(data["directory"]) / f).is_file() for f in data["files"])


def test_cli_plugin_new_table_in_the_default_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("plugin", "new", "acme_kpi", "--description", "KPIs")
    assert result.exit_code == 0, result.output
    assert "Created plugin crmkit-acme-kpi in" in result.stdout
    assert "crmkit_acme_kpi/__init__.py" in result.stdout
    assert (tmp_path / "crmkit-acme-kpi" / "README.md").is_file()


def test_cli_plugin_new_reports_a_bad_name(tmp_path: Path) -> None:
    result = run_cli("plugin", "new", "9lives", str(tmp_path / "p"))
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: name: '9lives' is not a plugin name")
    assert not (tmp_path / "p").exists()


def test_cli_plugin_new_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine", "utf-8")
    result = run_cli("plugin", "new", "acme-kpi", str(tmp_path))
    assert result.exit_code == Conflict.exit_code
    assert result.stderr.startswith("Error: directory: ")


# -- installed for real --------------------------------------------------------------------------
@pytest.mark.slow
def test_the_plugin_installs_into_a_venv_and_passes_its_tests(tmp_path: Path) -> None:
    """Generate, ``pip install`` (not editable) into a new venv, run its tests, list it.

    The new venv sees the site-packages of the environment running this test
    (through a ``.pth`` file), where crmkit and pytest already are, so only
    the plugin is installed (pip builds it in an isolated environment, with
    setuptools from the package index or pip's cache).
    """
    plugin = Path(create_plugin("acme-kpi", tmp_path / "crmkit-acme-kpi")["directory"])
    venv = tmp_path / "venv"
    env = clean_env(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")

    def run(*args: str | Path, cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
        return done

    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    # "import" lines of a .pth file run at start-up: addsitedir also reads the
    # .pth files there (crmkit's editable install is one)
    venv_site = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    ours = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(venv_site.stdout.strip()) / "_crmkit_test_parent.pth").write_text(
        "import site; " + "; ".join(f"site.addsitedir({p!r})" for p in ours) + "\n", "utf-8"
    )
    run(python, "-m", "pip", "install", "--quiet", str(plugin))
    shown = run(python, "-m", "pip", "show", "--files", "crmkit-acme-kpi").stdout
    assert "Version: 0.1.0" in shown
    assert "crmkit_acme_kpi/__init__.py" in shown  # a real install, not an editable link

    tests = run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=plugin)
    assert "11 passed" in tests.stdout

    # crmkit itself is installed outside the venv, so its script may not be in venv/bin
    crmkit = [venv / "bin" / "crmkit"] if (venv / "bin" / "crmkit").exists() else []
    crmkit = crmkit or [python, "-m", "crmkit.cli"]
    listed = json.loads(run(*crmkit, "plugins", "--format", "json").stdout)
    [info] = [i for i in listed if i["name"] == "acme_kpi"]
    assert info["version"] == "0.1.0"
    assert info["distribution"] == "crmkit-acme-kpi"
    assert info["hooks"] == HOOKS
    hello = run(*crmkit, "acme-kpi", "hello", "Anna").stdout
    assert hello == "Hello, Anna, from crmkit_acme_kpi 0.1.0!\n"
