"""The docs tell the truth and stay true: tables that restate code equal the code, every environment variable
the app reads is documented, the README's Python snippets run, and its screenshots are there.

The endpoint table of docs/app.md is checked against the running app in ``tests/app/test_app.py``.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV_NAME = re.compile(r"(PECMAE|GRADIO_SERVER)_[A-Z_]+")


def doc_tables():
    spec = importlib.util.spec_from_file_location("doc_tables", ROOT / "scripts" / "doc_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_csv_columns_and_exit_codes_in_the_docs_are_the_code():
    tables = doc_tables()
    blocks = {"csv-columns": tables.csv_columns_table(), "exit-codes": tables.exit_codes_table()}
    assert tables.stale_blocks(blocks) == []
    from pecmae_hub.batch.results import csv_columns

    documented = re.findall(r"^\| `([a-z_<>1K]+)`", blocks["csv-columns"], re.M)
    assert documented[:10] == csv_columns([], 0)[:10]  # the fixed columns, in file order
    assert "| 3 | some inputs failed" in blocks["exit-codes"] and "| 1 | error before any work" in blocks["exit-codes"]


def test_a_stale_table_or_an_undocumented_column_is_caught(tmp_path, monkeypatch):
    tables = doc_tables()
    for rel in ("README.md", "docs/hub.md", "docs/app.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text((ROOT / rel).read_text())
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text().replace("| `ood_score` |", "| `odd_score` |"))
    assert tables.stale_blocks({"csv-columns": tables.csv_columns_table()}, tmp_path) == ["README.md: csv-columns"]
    monkeypatch.delitem(tables.CSV_MEANINGS, "ood_score")
    with pytest.raises(ValueError, match=r"without a meaning \['ood_score'\]"):
        tables.csv_columns_table()


def _env_names_read_by(paths: list[Path]) -> set[str]:
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and ENV_NAME.fullmatch(node.value):
                names.add(node.value)
    return names


def test_every_environment_variable_of_the_app_is_documented():
    from pecmae_hub.app.settings import ENVIRONMENT

    tables = doc_tables()
    assert tables.stale_blocks({"environment": tables.environment_table()}) == []
    package = ROOT / "pecmae_hub"
    code = [*sorted((package / "app").glob("*.py")), ROOT / "app.py", package / "cli" / "app.py"]
    read = _env_names_read_by([*code, package / "hub" / "registry.py"])
    documented = {name for name, _, _ in ENVIRONMENT}
    assert read == documented, f"read but not documented: {read - documented}; documented, unread: {documented - read}"
    for name in ("PECMAE_ALLOWED_MODELS", "PECMAE_MODEL_DIRS", "PECMAE_MAX_UPLOAD_MB", "PECMAE_FILE_TTL"):
        assert f"| `{name}` |" in (ROOT / "docs" / "app.md").read_text()


def test_readme_python_snippets_run(tmp_path, monkeypatch, capsys):
    """Every ```python block of the README, run in order in one namespace, offline, in a scratch folder."""
    snippets = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert snippets, "the README has no Python snippet"
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace: dict = {}
    for code in snippets:
        exec(compile(code, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert out.startswith("violin {") and "False 1.0" not in out.splitlines()[4]  # the violin is in domain
    assert (tmp_path / "my-model" / "checksums.json").is_file()
    assert [r.ok for r in namespace["results"]] == [False, False]  # no a.wav, no broken.wav here: both reported


def test_readme_screenshots_are_there_and_small():
    readme = (ROOT / "README.md").read_text()
    for name in ("app-desktop.png", "app-phone.png"):
        path = ROOT / "docs" / "images" / name
        assert f"docs/images/{name}" in readme and path.is_file()
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size < 300_000
    assert "python scripts/screenshots.py" in readme


def test_no_absolute_checkout_paths_in_the_docs():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert not re.search(r"/work/|/home/\w+/", path.read_text()), path.name
