"""Packaging as users get it: optional-dependency messages, the version in one place, the Space folder."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import tomllib

from pecmae_hub.errors import MissingDependencyError
from pecmae_hub.extras import require

ROOT = Path(__file__).resolve().parents[1]


def _build_space_module():
    spec = importlib.util.spec_from_file_location("build_space", ROOT / "scripts" / "build_space.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_missing_optional_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # as if scikit-learn were not installed
    monkeypatch.setitem(sys.modules, "sklearn.cluster", None)
    with pytest.raises(
        MissingDependencyError,
        match=r"pecmae train needs the optional package 'scikit-learn'.*"
        r"pip install 'pecmae-hub\[train\]'",
    ):
        require("sklearn.cluster", "pecmae train")
    assert isinstance(MissingDependencyError("x"), ImportError)  # callers catching ImportError keep working
    with pytest.raises(ImportError):  # not one of our optional packages: the real error
        require("surely_not_a_module_xyz", "test")


def test_cli_turns_a_missing_extra_into_a_message_and_exit_code(monkeypatch, capsys):
    from pecmae_hub.cli import main

    monkeypatch.setitem(sys.modules, "gradio", None)
    assert main(["app"]) == 1
    err = capsys.readouterr().err
    assert "pecmae app needs the optional package 'gradio'" in err and "pecmae-hub[app]" in err


def test_version_is_written_once():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    import pecmae_hub

    assert project["tool"]["setuptools"]["dynamic"]["version"]["attr"] == "pecmae_hub.__version__"
    assert pecmae_hub.__version__.count(".") == 2


def test_core_dependencies_are_ranges_without_training_or_app_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = project["dependencies"]
    assert not [d for d in core if "==" in d], core  # no exact pins in a library
    names = {d.split(">")[0].split("=")[0].split("<")[0].strip().lower() for d in core}
    assert {"torch", "huggingface_hub", "safetensors", "soundfile"} <= names
    assert not names & {"scikit-learn", "accelerate", "matplotlib", "gradio"}
    extras = project["optional-dependencies"]
    assert extras["test"][0] == "pecmae-hub[app,train,data,datasets]"


def test_space_folder_is_what_the_hub_holds(tmp_path):
    build_space = _build_space_module()
    folder = build_space.build(tmp_path / "space")
    meta, _ = build_space.front_matter(folder / "README.md")
    assert build_space.check_front_matter(meta) == []
    assert meta["python_version"] == build_space.ZEROGPU_PYTHON and meta["suggested_hardware"] == "zero-a10g"
    assert not meta.get("models") and not meta.get("preload_from_hub")  # no model repo has been published yet
    requirements = (folder / "requirements.txt").read_text().splitlines()
    assert f"torch=={build_space.ZEROGPU_TORCH}" in requirements and "spaces" in requirements
    assert any(r.startswith("gradio") for r in requirements) and not any(
        r.startswith("accelerate") for r in requirements
    )
    for path in (
        "app.py",
        "pecmae_hub/app/ui.py",
        "checkpoints/gm-solos/model.safetensors",
        "examples/violin.wav",
        "examples/README.md",
    ):
        assert (folder / path).is_file(), path
    assert not list(folder.rglob("__pycache__")) and not (folder / "tests").exists()


def test_front_matter_checker_catches_what_the_hub_would_refuse():
    build_space = _build_space_module()
    problems = build_space.check_front_matter(
        {
            "title": "x",
            "sdk": "gradio",
            "sdk_version": "6.0.0",
            "python_version": "three",
            "app_file": "app.py",
            "license": "mit",
            "short_description": "x" * 61,
            "suggested_hardware": "gpu-huge",
            "colour": "red",
        }
    )
    text = "; ".join(problems)
    assert "unknown key 'colour'" in text and "python_version" in text and "suggested_hardware" in text
    assert "longer than 60" in text


def test_training_commands_check_their_extra_before_any_work(monkeypatch, capsys, tmp_path):
    from pecmae_hub.cli import main

    monkeypatch.setitem(sys.modules, "accelerate", None)
    assert main(["train", "--features", str(tmp_path), "--split-train", "missing.tsv", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "pecmae train needs the optional package 'accelerate'" in err and "pecmae-hub[train]" in err
