"""The spine's rules, checked on the source: stage packages do not import each other, and the
vocabularies shared by phantoms, measurers and prompts have one definition."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import medsynth

STAGES = ("data", "describe", "train", "generate", "evaluate", "judge", "refine")
"""Stage packages (medsynth/<stage>/): each may import shared modules, never another stage.
Everything else under medsynth/ is shared: the layers beside the stages (``imaging``: image and
dataset-folder I/O; ``judging``: criteria, judges, judged folders; ``mllm``, ``models``,
``metrics``, ...) and top-level modules."""
ROOT = Path(medsynth.__file__).resolve().parent


def _imported(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a module's syntax tree (functions too)."""
    out = []
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                parts = package.split(".")
                parent = ".".join(parts[:len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            # Each name is a submodule or an attribute of ``base``: ``from medsynth import refine``
            # imports a stage, ``from medsynth.data import dataset`` a shared module.
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return sorted(out)


def stage_of(name: str) -> str | None:
    parts = name.split(".")
    if len(parts) < 2 or parts[0] != "medsynth" or parts[1] not in STAGES:
        return None  # a shared layer (imaging, judging, mllm, models, ...) or a top-level module
    return parts[1]


def cross_stage_imports(root: Path) -> list[str]:
    """'file:line imports module' for every import of one stage package by another."""
    bad = []
    for stage in STAGES:
        for path in sorted((root / stage).rglob("*.py")) if (root / stage).is_dir() else []:
            rel = path.relative_to(root.parent).with_suffix("")
            module = ".".join(rel.parts)
            for line, name in _imported(ast.parse(path.read_text("utf-8")), module):
                other = stage_of(name)
                if other is not None and other != stage:
                    bad.append(f"{path.relative_to(root.parent)}:{line} imports {name}")
    return bad


def test_stage_packages_do_not_import_each_other() -> None:
    assert cross_stage_imports(ROOT) == []


def stage_imports_of_layers(root: Path) -> list[str]:
    """'file:line imports module' for every import of a stage by a shared module (the top-level
    ``cli.py``, which mounts the stages' commands, excepted)."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        if rel.parts[1] in STAGES or rel.parts[1:] in (("cli",), ("__main__",)):
            continue
        for line, name in _imported(ast.parse(path.read_text("utf-8")), ".".join(rel.parts)):
            if stage_of(name) is not None:
                bad.append(f"{path.relative_to(root.parent)}:{line} imports {name}")
    return bad


def test_shared_layers_do_not_import_stages() -> None:
    assert stage_imports_of_layers(ROOT) == []


def test_the_check_catches_cross_stage_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "medsynth"
    for stage in ("describe", "judge", "data"):
        (pkg / stage).mkdir(parents=True)
    (pkg / "describe" / "ok.py").write_text(
        "from medsynth.mllm import Engine\nfrom medsynth.imaging.dataset import open_dataset\n"
        "from medsynth.describe.schema import Schema\nfrom . import prompts\n"
        "from medsynth.imaging import readers\nfrom medsynth import artifacts\n")
    (pkg / "judge" / "bad.py").write_text(
        "def f():\n    from medsynth.describe.run import run_describe\n"
        "import medsynth.evaluate.inputs\nfrom medsynth import refine\n"
        "from medsynth.data.demo import derm\nfrom ..generate import sampler\n")
    (pkg / "data" / "ingest.py").write_text("from medsynth.train import loop\n")
    (pkg / "imaging").mkdir()
    (pkg / "imaging" / "readers.py").write_text("from medsynth.data.ingest import ingest\n")
    (pkg / "cli.py").write_text("from medsynth.data.cli import app\n")
    assert stage_imports_of_layers(pkg) == [
        "medsynth/imaging/readers.py:1 imports medsynth.data.ingest.ingest"]
    assert cross_stage_imports(pkg) == [
        "medsynth/data/ingest.py:1 imports medsynth.train.loop",
        "medsynth/judge/bad.py:2 imports medsynth.describe.run.run_describe",
        "medsynth/judge/bad.py:3 imports medsynth.evaluate.inputs",
        "medsynth/judge/bad.py:4 imports medsynth.refine",
        "medsynth/judge/bad.py:5 imports medsynth.data.demo.derm",
        "medsynth/judge/bad.py:6 imports medsynth.generate.sampler",
    ]


def test_derm_vocabulary_has_one_definition() -> None:
    from medsynth import vocabulary
    from medsynth.data.demo import derm as phantom
    from medsynth.describe.prompts import load_template
    from medsynth.pixel_attributes import derm as measurer

    assert phantom.COLOR_VOCAB is measurer.COLOR_VOCAB is vocabulary.DERM_COLORS
    assert phantom.STRUCTURE_VOCAB is measurer.STRUCTURE_VOCAB is vocabulary.DERM_STRUCTURES
    assert phantom.COLOR_RGB is measurer.COLOR_RGB is vocabulary.DERM_COLOR_RGB
    assert phantom.SKIN_RGB is measurer.SKIN_RGB is vocabulary.DERM_SKIN_RGB
    assert tuple(vocabulary.DERM_COLOR_RGB) == vocabulary.DERM_COLORS
    # The prompt template offers exactly these words, in the same order.
    spec = {a.name: a for a in load_template("derm").schema.attributes}
    assert spec["colors"].values == vocabulary.DERM_COLORS
    assert spec["structures"].values == vocabulary.DERM_STRUCTURES


@pytest.mark.parametrize("name", ["DERM_COLORS", "DERM_STRUCTURES"])
def test_vocabulary_words_are_tokens(name: str) -> None:
    from medsynth import vocabulary
    from medsynth.describe.schema import norm_token

    words = getattr(vocabulary, name)
    assert all(norm_token(w) == w for w in words) and len(set(words)) == len(words)
