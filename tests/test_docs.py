"""Docs that cannot go stale: the runnable command blocks of the README and docs/*.md are run and their
output compared with what the page shows; every relative link must resolve, and every file and test the
pages name in inline code must exist.

A runnable block is a ```console block directly after a line ``<!-- runnable -->``. In it, a line starting
with ``$ `` is a command (lines right after it starting with ``> `` continue it, as bash's prompt shows a
here-document), and the lines up to the next command are its expected output (stdout and stderr together).
The blocks of one page run in page order, in one temporary working folder per page that holds copies of
``PROVIDED`` (so commands say ``models/seed.keras``, ``tests/fixtures/...``), with the venv's ``bin`` first on
PATH (``edgeattn``, ``python``). A command must exit 0 unless the page shows its status (``echo $?``).

Both sides are normalised before the comparison (``normalise``): the figures that vary from run to run or
machine to machine become ``N`` (decimals, e-notation, numbers with thousands separators, dotted versions,
a whole number followed by a unit of time or size or by ``x`` or ``%``, the ``#N`` of a worst sample), and runs
of spaces become one (column alignment). Words, names, options, column headers, whole numbers without a unit
(node counts, shapes, batch sizes, exit codes) and pass/fail words are compared as they are. ``...`` in an
expected line matches any text; an expected line that is only ``...`` matches any number of lines.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import ROOT, need

# The pages: the README and docs/*.md.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# What a page's working folder holds (copied from the repository), so that its commands run as from the root.
PROVIDED = ("models", "tests/fixtures", "docs/find-max-8.npy", "examples")
MARKER = "<!-- runnable -->"
BLOCK_TIMEOUT_S = 600

# Figures that vary: each alternative is one kind; the first that matches at a place wins.
FIGURE = re.compile(
    r"(?<![\w.])(?:"
    r"\d+(?:\.\d+){2,}"  # a dotted version: 3.11.7, 1.32.0
    r"|\d+(?:\.\d+)?[eE][-+]?\d+"  # e-notation: errors (8.94e-07, 1e-05)
    r"|\d{1,3}(?:,\d{3})+(?:\.\d+)?"  # thousands separators: bytes, rates, microseconds (107,023; 3,935.6)
    r"|\d+\.\d+"  # decimals: times, ratios, scales, errors, predictions
    r"|\d+(?=(?:x|%)(?!\w))"  # a whole ratio or percentage: 17x, 96%
    r"|\d+(?= ?(?:s|ms|us|µs|bytes|B|KiB|MiB|GiB|kB|KB|MB|GB)(?![\w/]))"  # a whole time or size: 12 s, 64 MB
    r")"
)
WORST_SAMPLE = re.compile(r"#\d+")


def normalise_line(line: str) -> str:
    line = WORST_SAMPLE.sub("#N", FIGURE.sub("N", line))
    return " ".join(line.split())


def normalise(text: str) -> list[str]:
    lines = [normalise_line(line) for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def line_matches(expected: str, actual: str) -> bool:
    if "..." not in expected:
        return expected == actual
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, actual) is not None


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether the actual lines match the expected ones (a line '...' stands for any number of lines)."""
    memo: dict[tuple[int, int], bool] = {}

    def at(i: int, j: int) -> bool:
        if (i, j) not in memo:
            if i == len(expected):
                memo[i, j] = j == len(actual)
            elif expected[i] == "...":
                memo[i, j] = at(i + 1, j) or (j < len(actual) and at(i, j + 1))
            else:
                memo[i, j] = j < len(actual) and line_matches(expected[i], actual[j]) and at(i + 1, j + 1)
        return memo[i, j]

    return at(0, 0)


@dataclass
class Command:
    line: int  # where the command starts in the page (1-based)
    text: str  # the command, continuation lines joined with newlines
    expected: list[str] = field(default_factory=list)


@dataclass
class Block:
    page: Path
    line: int
    commands: list[Command]


def runnable_blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        where = f"{page.relative_to(ROOT)}:{i + 1}"
        assert i + 1 < len(lines) and lines[i + 1].strip() == "```console", (
            f"{where}: {MARKER} must come directly before a ```console block"
        )
        commands: list[Command] = []
        j = i + 2
        while j < len(lines) and lines[j].strip() != "```":
            text = lines[j]
            if text.startswith("$ "):
                commands.append(Command(j + 1, text[2:]))
            elif text.startswith("> ") or text == ">":
                assert commands and not commands[-1].expected, f"{where}: a '> ' line must continue a command"
                commands[-1].text += "\n" + text[2:]
            else:
                assert commands, f"{where}: a runnable block must start with a '$ ' command"
                commands[-1].expected.append(text)
            j += 1
        assert j < len(lines), f"{where}: the block is not closed"
        assert commands, f"{where}: a runnable block without a command"
        blocks.append(Block(page, i + 1, commands))
    return blocks


def working_folder(tmp_path: Path) -> Path:
    for name in PROVIDED:
        source, target = ROOT / name, tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    return tmp_path


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", COLUMNS="80", TF_CPP_MIN_LOG_LEVEL="3")
    return env


def run_block(block: Block, cwd: Path) -> list[tuple[str, int]]:
    """Each command's output (stdout and stderr as one stream) and exit status, from one bash process."""
    mark = f"__edgeattn_docs_{uuid.uuid4().hex}__"
    script = ["exec 2>&1"]
    for command in block.commands:
        script += [command.text, f"__rc=$?; printf '\\n%s %d\\n' {mark} \"$__rc\"; (exit $__rc)"]
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=cwd,
        env=environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=BLOCK_TIMEOUT_S,
    )
    results: list[tuple[str, int]] = []
    rest = done.stdout
    for _ in block.commands:
        before, sep, after = rest.partition(f"\n{mark} ")
        assert sep, f"{block.page.name}:{block.line}: the block stopped early:\n{done.stdout}"
        status, _, rest = after.partition("\n")
        results.append((before, int(status)))
    return results


def check_block(block: Block, cwd: Path) -> None:
    results = run_block(block, cwd)
    where = block.page.relative_to(ROOT)
    for k, (command, (output, status)) in enumerate(zip(block.commands, results)):
        shows_status = "echo $?" in command.text or (
            k + 1 < len(block.commands) and block.commands[k + 1].text.strip() == "echo $?"
        )
        assert status == 0 or shows_status, (
            f"{where}:{command.line}: `{command.text}` exited {status}:\n{output}"
        )
        expected, actual = normalise("\n".join(command.expected)), normalise(output)
        if not matches(expected, actual):
            diff = "\n".join(
                difflib.unified_diff(expected, actual, "page (normalised)", "run (normalised)", lineterm="")
            )
            pytest.fail(
                f"{where}:{command.line}: the output of `{command.text}` is not what the page shows.\n"
                f"--- the run printed:\n{output}\n{diff}",
                pytrace=False,
            )


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


RUNNABLE_PAGES = [
    p for p in PAGES if any(line.strip() == MARKER for line in p.read_text(encoding="utf-8").splitlines())
]


@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=page_id)
def test_the_runnable_blocks_print_what_the_page_shows(page: Path, tmp_path: Path) -> None:
    need(importlib.util.find_spec("tensorflow") is not None, "the runnable blocks need the [export] extra")
    need(shutil.which("bash") is not None, "bash is not installed")
    cwd = working_folder(tmp_path)
    for block in runnable_blocks(page):
        check_block(block, cwd)


# --- links -------------------------------------------------------------------------------------------------

FENCE = re.compile(r"^\s*(```|~~~).*?^\s*\1\s*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup and punctuation dropped, lower case, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(page: Path) -> list[str]:
    text = INLINE_CODE.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
    return LINK.findall(text)


def test_every_relative_link_resolves() -> None:
    broken: list[str] = []
    for page in PAGES:
        for target in links(page):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: ({target})"
            if not resolved.exists():
                broken.append(f"{where}: no such file")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{where}: no heading with the anchor #{anchor} in {resolved.name}")
    assert not broken, "broken links:\n" + "\n".join(broken)


# The front page and docs/*.md name files of the repository in inline code; each must exist.
FRONT = ROOT / "README.md"
NAMED_PATH = re.compile(r"`((?:edgeattn|tests|scripts|examples|models|docs)/[\w./-]*)(?:::(\w+))?`")


def test_every_file_and_test_the_pages_name_exists() -> None:
    missing: list[str] = []
    for page in [FRONT, *sorted((ROOT / "docs").glob("*.md"))]:
        text = FENCE.sub("", page.read_text(encoding="utf-8"))
        for path, test in NAMED_PATH.findall(text):
            where = f"{page.relative_to(ROOT)}: `{path}{'::' + test if test else ''}`"
            if any(mark in path for mark in ("*", "<", "...", "FILE")):  # a pattern or a placeholder
                continue
            if not (ROOT / path).exists():
                missing.append(f"{where}: no such file")
            elif test and not re.search(rf"^def {test}\b", (ROOT / path).read_text(encoding="utf-8"), re.M):
                missing.append(f"{where}: no such test")
    assert not missing, "the pages name what is not there:\n" + "\n".join(missing)


def test_the_pages_hold_runnable_blocks_and_the_speed_page_its_markers() -> None:
    """The front page and the docs it names carry runnable examples; scripts/benchmark.py writes its tables
    between the two markers of docs/speed.md."""
    assert runnable_blocks(FRONT), f"{FRONT.name} has no runnable block"
    speed = (ROOT / "docs" / "speed.md").read_text(encoding="utf-8")
    start, end = speed.find("<!-- benchmark:start -->"), speed.find("<!-- benchmark:end -->")
    assert speed.count("<!-- benchmark:start -->") == 1 and speed.count("<!-- benchmark:end -->") == 1
    assert 0 <= start < end


@pytest.mark.parametrize(
    ("page", "run", "same"),
    [
        ("exported m.keras -> m.onnx in 2.6 s", "exported m.keras -> m.onnx in 12.0 s", True),
        ("y  2.98e-07   0.000114  1.43  batch 64 #25  pass", "y 3.1e-07 0.0001 1.5 batch 64 #3 pass", True),
        ("size    107,023 bytes", "size 99,870 bytes", True),
        ("(0.34x) 0.137% 17x 96%", "(0.35x) 0.2% 18x 95%", True),
        ("Python 3.11.7, onnxruntime 1.32.0", "Python 3.12.1, onnxruntime 1.33.1", True),
        ("max abs 0.00137 = 0.137% of its scale 1", "max abs 0.002 = 0.2% of its scale 1", True),
        ("y 2.98e-07 batch 64 #25 pass", "y 2.98e-07 batch 64 #25 FAIL", False),
        ("17 nodes (opset 17", "16 nodes (opset 17", False),
        ("output attention_weights (batch, 10)", "output attention (batch, 10)", False),
        ("verify: pass (atol 0.0001)", "check: pass (atol 0.0001)", False),
        ("output  max abs  tolerance", "output max abs tol", False),
        ("2", "1", False),
        (
            "a500.onnx k2-attention.h5 float32 LSTM__39_R",
            "a500.onnx k2-attention.h5 float32 LSTM__40_R",
            False,
        ),
        ("seed.onnx: time 10, ...", "seed.onnx: time 10, AMD EPYC, 2 cores", True),
    ],
)
def test_the_normalisation_keeps_words_and_drops_figures(page: str, run: str, same: bool) -> None:
    assert matches(normalise(page), normalise(run)) is same
