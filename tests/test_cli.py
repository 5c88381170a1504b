from __future__ import annotations

import subprocess
import sys

import typer
from typer.testing import CliRunner

from medsynth.cli import PIPELINE, app

runner = CliRunner()


def test_help_does_not_import_heavy_libraries() -> None:
    code = ("import sys, medsynth.cli; "
            "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'monai', 'pydicom', 'pandas') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _walk(cmd, path: list[str]):  # type: ignore[no-untyped-def]
    yield path, cmd
    if getattr(cmd, "commands", None):
        for name, sub in cmd.commands.items():
            yield from _walk(sub, [*path, name])


def test_every_command_and_option_has_help() -> None:
    root = typer.main.get_command(app)
    missing = []
    seen = {" ".join(path) for path, _ in _walk(root, [])}
    assert {"data", "data info", "data import"} <= seen
    for path, cmd in _walk(root, []):
        if path and not (cmd.help or cmd.short_help):
            missing.append(" ".join(path))
        for p in cmd.params:
            if p.param_type_name == "option" and not p.help and p.name not in ("help",):
                missing.append(f"{' '.join(path)} {p.opts[0]}")
        r = runner.invoke(app, [*path, "--help"])
        assert r.exit_code == 0, (path, r.output)
    assert not missing, f"no help text: {missing}"


def test_unknown_command_is_usage_error() -> None:
    r = runner.invoke(app, ["frobnicate"])
    assert r.exit_code == 2


def test_help_never_cuts_option_names() -> None:
    """Piped (no terminal width), help is drawn at 100 columns: option names stay whole."""
    root = typer.main.get_command(app)
    for path, cmd in _walk(root, []):
        r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
        assert r.exit_code == 0 and "…" not in r.output, (path, r.output)
        for p in cmd.params:
            if p.param_type_name == "option":
                assert any(o in r.output for o in p.opts), (path, p.opts)


# Every command with an --out, as a user would call it (inputs need not exist: the output folder
# is made first, or the inputs are read after it fails).
_COMMANDS = [["data", "demo", "derm", "--n-per-class", "2", "--size", "16"],
             ["data", "import", "{derm}"], ["describe", "{derm}"], ["train", "{derm}"],
             ["generate", "{model}"], ["evaluate", "--real", "{derm}", "--synthetic", "{synth}", "--no-benchmark"]]


def test_os_errors_are_one_line_naming_the_path(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A read-only folder (simulated: tests may run as root) gives one line, for every command."""
    import errno
    import pathlib

    derm = tmp_path / "derm"
    assert runner.invoke(app, ["data", "demo", "derm", "--out", str(derm), "--n-per-class", "2",
                               "--size", "16"]).exit_code == 0
    ro = tmp_path / "ro"
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *a, **k):  # type: ignore[no-untyped-def]
        if str(self).startswith(str(ro)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    # evaluate checks its inputs before making --out; a synthetic set is not the point here
    import medsynth.evaluate.inputs
    from medsynth.imaging.dataset import open_dataset

    monkeypatch.setattr(medsynth.evaluate.inputs, "open_inputs",
                        lambda *a: (open_dataset(derm), [], []))
    # generate reads its model before making --out: a real (random-weight) model folder
    from tests.generate.conftest import make_model

    model = make_model(tmp_path / "m", classes=["melanoma", "nevus"], channels=3,
                       dtype="uint8", modality="XC")
    for cmd in _COMMANDS:
        args = [a.format(derm=derm, model=model, synth=derm) for a in cmd]
        out = ro / "out" / args[0]
        r = runner.invoke(app, [*args, "--out", str(out)])
        assert r.exit_code == 1, (cmd, r.output)
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert any(ln.startswith(f"error: {out}") and "Read-only file system" in ln
                   for ln in lines), (cmd, r.output)
        assert "Traceback" not in r.output and len(lines) <= 3, (cmd, r.output)
        assert isinstance(r.exception, SystemExit)


def test_disk_full_names_the_file_or_the_out_folder(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import errno

    from medsynth.errors import os_error

    # an atomic write's temp file is reported under the name the user knows
    e = os_error(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".a.png.x1y2.part")))
    assert str(e).startswith(f"{tmp_path / 'a.png'}: No space left on device") and "disk" in str(e)
    # libraries that only say so in their message (torch, safetensors): the --out folder is named
    e = os_error(RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"),
                 "MODEL")
    assert str(e).startswith("MODEL: No space left on device")
    assert os_error(ValueError("a bug"), "X") is None
    # a real failed write through the shared atomic writer names the target file
    from medsynth import artifacts

    def no_space(*a, **k):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts.os, "fsync", no_space)
    r = runner.invoke(app, ["data", "demo", "derm", "--out", str(tmp_path / "d"),
                            "--n-per-class", "2", "--size", "16", "--workers", "1"])
    assert r.exit_code == 1 and "No space left on device" in r.output, r.output
    assert f"error: {tmp_path / 'd'}" in r.output and "Traceback" not in r.output


def test_help_lists_commands_in_pipeline_order_and_fits_the_terminal() -> None:
    """On an 80-column terminal no help line is wider than 80 (wider ones wrap every line)."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "TERMINAL_WIDTH"} | {"COLUMNS": "80"}
    for args in ([], ["generate"], ["data", "import"]):
        r = subprocess.run([sys.executable, "-m", "medsynth.cli", *args, "--help"], env=env,
                           capture_output=True, text=True)
        lines = r.stdout.split("\n")
        assert r.returncode == 0 and max(len(x) for x in lines) <= 80, (args, r.stdout)
        if not args:
            order = [w for x in lines for w in x.split()[1:2] if w in PIPELINE]
            assert order == list(PIPELINE), r.stdout


def test_refine_takes_max_steps_like_train() -> None:
    r = runner.invoke(app, ["refine", "--help"])
    assert "--max-steps" in r.output  # --steps stays as its alias (the old name)
    for opt in ("--max-steps", "--steps"):
        r = runner.invoke(app, ["refine", "m", "--judged", "j", "--out", "o", opt, "0"])
        assert r.exit_code == 2 and "steps" in r.output, r.output  # validated, not unknown
