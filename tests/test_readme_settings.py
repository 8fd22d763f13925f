"""The README's settings table lists every Settings field with its real default and description."""

import re
from pathlib import Path

from pydantic.fields import FieldInfo

from service.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"
ROW = re.compile(r"^\| `(MADE_[A-Z_]+)` \| `([^`]*)` \| (.*) \|$")


def default_text(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def test_readme_settings_table_matches_the_settings_class() -> None:
    section = README.read_text().split("### Settings", 1)[1]
    documented = [ROW.match(line).groups() for line in section.splitlines() if ROW.match(line)]
    expected = [
        (f"MADE_{name.upper()}", default_text(field), field.description)
        for name, field in Settings.model_fields.items()
    ]
    assert documented == expected
