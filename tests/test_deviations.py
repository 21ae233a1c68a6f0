"""The default recipe's deviations table (m3sa/deviations.py) against RECIPES, docs and the report."""

from __future__ import annotations

from pathlib import Path

from m3sa.config import RECIPES, config_from_dict
from m3sa.deviations import DEVIATIONS

ROOT = Path(__file__).resolve().parents[1]


def _recipe_value(recipe: str, key: str):
    section, knob = key.split(".")
    return RECIPES[recipe][section][knob]


def test_every_recipe_knob_is_listed_with_its_values():
    listed = {d.key: d for d in DEVIATIONS if not d.key.startswith("(")}
    governed = {f"{s}.{k}" for r in RECIPES.values() for s, knobs in r.items() for k in knobs}
    assert set(listed) == governed
    for key, d in listed.items():
        for recipe, cell in (("paper", d.paper), ("default", d.default)):
            value = _recipe_value(recipe, key)
            shown = str(value).lower() if isinstance(value, bool) else f"{value:g}"
            assert cell.split()[0] == shown, (key, recipe, cell, value)


def test_docs_filter_lists_every_deviation():
    text = (ROOT / "docs/filter.md").read_text()
    for d in DEVIATIONS:
        assert f"| {d.key} |" in text or f"| `{d.key}` |" in text, d.key


def test_report_names_the_recipe_and_lists_the_deviations(tmp_path):
    from m3sa.report.build import build_report

    for recipe in ("default", "paper"):
        doc = build_report(config_from_dict({"model": {"recipe": recipe}}), tmp_path)
        table = next(t for t in doc.tables() if t.caption.startswith("Default recipe: deviations"))
        assert [r[0] for r in table.rows] == [d.key for d in DEVIATIONS]
        section = next(s for s in doc.sections if s.title.startswith("5. Modality filter"))
        text = " ".join(b.text for b in section.blocks if hasattr(b, "text"))
        assert f"model.recipe={recipe}" in text
        assert ("soft_lambda 1000" in text) == (recipe == "paper")
    doc = build_report(config_from_dict({"model": {"name": "text_only"}}), tmp_path)
    assert not [t for t in doc.tables() if t.caption.startswith("Default recipe: deviations")]
