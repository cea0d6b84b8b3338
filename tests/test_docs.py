"""The docs a newcomer reads: a short README, and every link resolving inside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = sorted(
    [REPO / "README.md", REPO / "CONTRIBUTING.md", REPO / "CHANGELOG.md", *REPO.glob("docs/*.md")]
)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(h) for h in re.findall(r"^#+\s+(.*)$", text, re.M)}


def links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans hold examples, not links
    return [a or b for a, b in LINK.findall(text)]


def test_the_readme_is_a_page_a_newcomer_reads_in_five_minutes():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for command in ("make run", "make test"):
        assert f"{command} " in readme
    for page in ("docs/kpis.md", "docs/deploy.md", "docs/runbook.md"):
        assert f"]({page})" in readme, page


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_resolves_inside_the_repository(page):
    assert page.exists(), f"{page.relative_to(REPO)} is missing"
    broken = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if REPO not in resolved.parents and resolved != REPO:
            broken.append(f"{target}: outside the repository")
        elif not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_the_deploy_guide_gives_each_limits_default_and_bound_as_the_config_does():
    from infra.config import PipelineConfig

    table = (REPO / "docs" / "deploy.md").read_text()
    checked = 0
    for name in (
        "max_files_per_run",
        "ingest_concurrency",
        "transform_concurrency",
        "max_dates_per_run",
        "max_file_attempts",
        "max_recompute_days",
    ):
        row = re.search(rf"^\| `{name}` \|.*\(default ([\d,]+), at most ([\d,]+)\)", table, re.M)
        assert row, f"docs/deploy.md has no row for {name} with its default and bound"
        field = PipelineConfig.model_fields[name]
        (bound,) = [m.le for m in field.metadata if hasattr(m, "le")]
        assert (int(row[1].replace(",", "")), int(row[2].replace(",", ""))) == (
            field.default,
            bound,
        ), name
        checked += 1
    assert checked == 6
