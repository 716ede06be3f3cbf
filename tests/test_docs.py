"""The README and docs/ stay usable: local links and anchors resolve, the quick start names real commands, and the
repository stands on its own (no path outside it)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)


def _without_code(text: str) -> str:
    """Markdown minus fenced blocks and inline code, where brackets are not links."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def github_anchor(heading: str) -> str:
    """GitHub's heading id: lowercase, punctuation other than - and _ dropped, spaces to -."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading id of a Markdown page (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = github_anchor(match.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Local links of ``page`` whose file, or whose #anchor in that file, does not exist."""
    problems = []
    for target in LINK.findall(_without_code(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            problems.append(f"{page.relative_to(root)}: {target} -> no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{page.relative_to(root)}: {target} -> no heading #{anchor} in {dest.name}")
    return problems


def make_targets(makefile: Path) -> set[str]:
    """Explicit targets plus static-pattern targets such as ``$(REPRO_TARGETS): reproduce-%: ...``."""
    text = makefile.read_text(encoding="utf-8")
    variables = dict(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\s*[:?]?=\s*(.*)$", text, re.M))

    def expand(value: str) -> str:
        for _ in range(10):
            value = re.sub(
                r"\$\(addprefix ([^,]+),([^)]*\)?)\)",
                lambda m: " ".join(m.group(1) + w for w in expand(m.group(2)).split()),
                value,
            )
            value = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: variables.get(m.group(1), ""), value)
        return value

    targets = set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M))
    for names in re.findall(r"^(\$\([A-Za-z_][A-Za-z0-9_]*\))\s*:(?!=)", text, re.M):
        targets.update(expand(names).split())
    return targets


def quick_start_commands(readme: Path) -> list[str]:
    """Lines of the first fenced code block under the README's "Quick start" heading (comments stripped)."""
    text = readme.read_text(encoding="utf-8")
    section = re.search(r"^## Quick start\s*$(.*?)(?=^## )", text, re.M | re.S)
    assert section, "README.md has no '## Quick start' section"
    block = re.search(r"^```[a-z]*\n(.*?)^```", section.group(1), re.M | re.S)
    assert block, "the README quick start has no code block"
    lines = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line]


def unknown_commands(commands: list[str], targets: set[str]) -> list[str]:
    """Commands that name a make target the Makefile lacks, or a ``python -m glsim_pl.X`` module that is missing."""
    problems = []
    for command in commands:
        words = command.split()
        if words[0] == "make":
            named = [w for w in words[1:] if not w.startswith("-") and "=" not in w] or ["(default)"]
            problems += [f"{command}: no make target {t!r}" for t in named if t not in targets]
        elif "-m" in words and words.index("-m") + 1 < len(words):
            module = words[words.index("-m") + 1]
            if not module.startswith("glsim_pl") or importlib.util.find_spec(module) is None:
                problems.append(f"{command}: no module {module!r}")
        else:
            problems.append(f"{command}: neither 'make <target>' nor 'python -m glsim_pl.<module>'")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_local_links_and_anchors_resolve(page: Path) -> None:
    assert broken_links(page) == []


def test_link_checker_catches_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("# Own data (folder / CSV)\n\n## Pretrained weights\n")
    page = tmp_path / "a.md"
    page.write_text(
        "[ok](b.md#own-data-folder--csv) [ok](b.md#pretrained-weights) [web](https://example.org/x)\n"
        "`[code](nope.md)` [gone](missing.md) [bad anchor](b.md#no-such-heading)\n"
    )
    assert broken_links(page, tmp_path) == [
        "a.md: missing.md -> no such file",
        "a.md: b.md#no-such-heading -> no heading #no-such-heading in b.md",
    ]


def test_every_docs_page_is_listed_in_the_index() -> None:
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    linked = {target.partition("#")[0] for target in LINK.findall(index)}
    missing = [p.name for p in PAGES[1:] if p.name != "index.md" and p.name not in linked]
    assert missing == []


def test_quick_start_names_existing_make_targets_and_modules() -> None:
    commands = quick_start_commands(ROOT / "README.md")
    assert commands, "the quick start block is empty"
    assert unknown_commands(commands, make_targets(ROOT / "Makefile")) == []


def test_command_checker_catches_unknown_targets_and_modules() -> None:
    targets = make_targets(ROOT / "Makefile")
    assert {"train", "test", "reproduce-cub", "reproduce-cub448", "gpu-check"} <= targets
    problems = unknown_commands(
        ["make train", "make trian", "python -m glsim_pl.train", "python -m glsim_pl.trian", "pytest -q"], targets
    )
    assert len(problems) == 3 and "trian" in problems[0] and "glsim_pl.trian" in problems[1]


def repository_files() -> list[Path]:
    """The tracked files (git), else every file outside .git, virtual environments and caches."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        return [ROOT / name for name in out.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", ".gpu", "outputs", "multirun", "__pycache__", ".pytest_cache", ".ruff_cache"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


OUTSIDE = "/".join(["..", "shared"])  # spelled in two parts so that this file does not match itself


def files_referring_outside(files: list[Path], root: Path = ROOT) -> list[str]:
    """``file:line`` of every text line that names the folder beside the repository."""
    hits = []
    for path in files:
        if not path.is_file() or path.suffix in {".pt", ".pth", ".ckpt", ".png", ".jpg", ".safetensors"}:
            continue
        lines = path.read_text(encoding="utf-8", errors="ignore").splitlines()
        hits += [f"{path.relative_to(root)}:{n}" for n, line in enumerate(lines, 1) if OUTSIDE in line]
    return hits


def test_no_tracked_file_refers_outside_the_repository() -> None:
    assert files_referring_outside(repository_files()) == []


def test_outside_reference_check_catches_one(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("fine\nread the fixture from " + OUTSIDE + "/fixtures\n")
    (tmp_path / "blob.pt").write_bytes(OUTSIDE.encode())  # binary files are not read
    assert files_referring_outside(sorted(tmp_path.iterdir()), tmp_path) == ["notes.md:2"]
