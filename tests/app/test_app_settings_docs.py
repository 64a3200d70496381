"""docs/app.md's table of environment variables restates pecmae_hub.app.settings: checked, not trusted."""

from __future__ import annotations

import re
from pathlib import Path

import pecmae_hub.app.settings as settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "app.md"


def _variables(text: str) -> set[str]:
    return set(re.findall(r"^\| `{1,2}((?:PECMAE|GRADIO)_[A-Z_]+)`{1,2} \|", text, flags=re.M))


def test_the_docs_list_every_setting_the_app_reads():
    documented, in_code = _variables(DOCS.read_text()), _variables(settings.__doc__ or "")
    assert in_code >= {"PECMAE_MODEL", "PECMAE_MAX_SECONDS", "PECMAE_FILE_TTL", "GRADIO_SERVER_PORT"}
    assert documented == in_code, f"only in docs/app.md: {documented - in_code}; only in code: {in_code - documented}"
    read = set(re.findall(r"\"((?:PECMAE|GRADIO)_[A-Z_]+)\"", Path(settings.__file__).read_text()))
    assert read <= in_code, f"read by settings.py but not in its table: {read - in_code}"
