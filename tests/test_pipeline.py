"""Fast tests of the execution pipeline (ibnb.book.provenance, ibnb.book.runner); no training.

The runner is pointed at throw-away notebooks in ``tmp_path``. Most tests replace
``papermill.execute_notebook`` by a fake that copies the notebook (instant); two tests
run a real kernel on a three-cell notebook (a few seconds each).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest

from ibnb.book import provenance
from ibnb.book import cli, runner, stale
from ibnb.book.runner import Paths, RunnerError

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- helpers
def make_notebook(path: Path, body: str = "result = 2 * 21\nprint(result)", extra_params: str = "") -> Path:
    """Write a tiny parameterised notebook: markdown title, parameters cell, one code cell."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "cpu"\nn = None\n' + extra_params)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Tiny"), params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture
def layout(tmp_path: Path, monkeypatch) -> Paths:
    """A repo-like tmp folder with notebooks/tiny.ipynb and an empty book/experiments.

    The runner's scratch folders (kept after a failure, for debugging) also go to tmp_path.
    """
    (tmp_path / "scratch").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "scratch"))
    paths = Paths(repo=tmp_path, notebooks=tmp_path / "notebooks", experiments=tmp_path / "book" / "experiments")
    make_notebook(paths.notebooks / "tiny.ipynb")
    paths.experiments.mkdir(parents=True)
    return paths


@pytest.fixture
def fake_papermill(monkeypatch):
    """Replace papermill's executor by a copy; returns the list of calls (parameters dicts)."""
    calls: list[dict] = []

    def fake_execute(input_path, output_path, parameters=None, **kwargs):
        calls.append(dict(parameters or {}))
        shutil.copyfile(input_path, output_path)

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    return calls


def run_tiny(paths: Paths, **kw):
    """run_notebooks on the tmp layout without progress bars."""
    return runner.run_notebooks(["tiny"], paths=paths, progress=False, **kw)


# ----------------------------------------------------------------------------- provenance
def test_code_hash_changes_when_a_file_changes(tmp_path):
    pkg = tmp_path / "ibnb"
    shutil.copytree(REPO / "ibnb", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    h0 = provenance.code_hash(pkg)
    assert len(h0) == 12 and h0 == provenance.code_hash(pkg)  # deterministic
    target = pkg / "book" / "runner.py"
    target.write_text(target.read_text() + "\n# a comment\n")
    h1 = provenance.code_hash(pkg)
    assert h1 != h0
    (pkg / "core" / "models" / "new_module.py").write_text("x = 1\n")
    assert provenance.code_hash(pkg) not in (h0, h1)
    (pkg / "notes.txt").write_text("not python")  # non-.py files do not count
    assert provenance.code_hash(pkg) == provenance.code_hash(pkg)


def test_git_commit_outside_git_is_unknown(tmp_path):
    assert provenance.git_commit(tmp_path) == "unknown"


def test_provenance_box_has_all_fields(capsys, monkeypatch):
    monkeypatch.setattr(provenance, "_in_ipython", lambda: False)
    run = provenance.start("01_demo", {"profile": "smoke", "epochs": 3, "lr": 0.1})
    info = run.finish()
    printed = capsys.readouterr().out
    for key in ("notebook", "commit", "code_hash", "profile", "params", "environment", "started_utc",
                "wall_s", "wall_min"):
        assert key in info, key
    for key in ("python", "torch", "torchvision", "numpy", "device", "torch_threads", "cpu_count"):
        assert key in info["environment"], key
    box = provenance.format_box(info)
    assert printed.strip() == box.strip()
    for label in ("commit", "ibnb code hash", "profile", "parameters", "device",
                  "python / torch / torchvision / numpy", "CPU threads", "started (UTC)", "wall time"):
        assert f"| {label} |" in box, label
    assert "epochs=3" in box and "lr=0.1" in box and "`smoke`" in box
    assert info["code_hash"] == provenance.code_hash(files=info["code_files"])
    json.loads(run.to_json())


def test_start_rejects_non_dict_params():
    with pytest.raises(TypeError, match="dict"):
        provenance.start("x", ["profile", "cpu"])


# ----------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("text, value", [
    ("50", 50), ("-3", -3), ("0.1", 0.1), ("1e-3", 1e-3), ("True", True), ("false", False),
    ("None", None), ("null", None), ("gpu", "gpu"), ("yes", "yes"), ("[1, 2]", [1, 2]), ("a b", "a b"),
])
def test_parse_value_like_papermill(text, value):
    assert cli.parse_value(text) == value
    assert type(cli.parse_value(text)) is type(value)


def test_unknown_parameter_is_a_clear_error(layout, fake_papermill):
    with pytest.raises(RunnerError) as err:
        run_tiny(layout, overrides={"epcohs": 3})
    msg = str(err.value)
    assert "epcohs" in msg and "n, profile" in msg and "tiny" in msg
    assert fake_papermill == []


def test_cli_unknown_parameter_exits_nonzero(layout, fake_papermill, capsys):
    code = cli.main(["--repo", str(layout.repo), "run", "tiny", "-p", "nope", "1", "--no-progress"])
    assert code != 0
    assert "unknown parameter(s) nope" in capsys.readouterr().err


def test_missing_notebook_lists_available(layout):
    with pytest.raises(RunnerError, match="Available: tiny"):
        runner.find_notebooks(["does_not_exist"], layout.notebooks)


def test_notebook_without_parameters_cell(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nbformat.write(nb, tmp_path / "bare.ipynb")
    with pytest.raises(RunnerError, match="tagged 'parameters'"):
        runner.check_params(tmp_path / "bare.ipynb", {"profile": "cpu"})


# ----------------------------------------------------------------------------- hash / skip
def test_skip_when_unchanged_and_rerun_when_changed(layout, fake_papermill, monkeypatch):
    dest = layout.experiments / "tiny.ipynb"
    [first] = run_tiny(layout, profile="smoke")
    assert first.status == "executed" and dest.exists()
    meta = nbformat.read(dest, as_version=4).metadata["ibnb"]
    assert set(meta) >= {"hash", "source_hash", "code_hash", "params", "profile", "executed_at", "wall_s"}
    assert meta["params"] == {"profile": "smoke"} and meta["profile"] == "smoke"

    assert run_tiny(layout, profile="smoke")[0].status == "skipped"
    assert run_tiny(layout, profile="smoke", force=True)[0].status == "executed"
    assert run_tiny(layout, profile="cpu")[0].status == "executed"            # params changed
    assert run_tiny(layout, profile="cpu", overrides={"n": 5})[0].status == "executed"
    assert run_tiny(layout, profile="cpu", overrides={"n": 5})[0].status == "skipped"

    make_notebook(layout.notebooks / "tiny.ipynb", body="result = 43")      # source changed
    assert run_tiny(layout, profile="cpu", overrides={"n": 5})[0].status == "executed"
    monkeypatch.setattr(runner, "current_code_hash", lambda files=None: "000000000000")  # ibnb code changed
    assert run_tiny(layout, profile="cpu", overrides={"n": 5})[0].status == "executed"
    assert len(fake_papermill) == 6
    assert fake_papermill[-1] == {"profile": "cpu", "n": 5}


def test_source_hash_ignores_outputs_but_not_tags(layout):
    nb = nbformat.read(layout.notebooks / "tiny.ipynb", as_version=4)
    h = runner.source_hash(nb)
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="42\n")]
    nb.cells[2].execution_count = 7
    assert runner.source_hash(nb) == h
    nb.cells[1].metadata["tags"] = []
    assert runner.source_hash(nb) != h


def test_real_kernel_run_writes_metadata_and_summary(layout, capsys):
    [outcome] = run_tiny(layout, profile="smoke", overrides={"n": 2})
    out = capsys.readouterr().out
    assert "tiny: executed, wall" in out
    nb = nbformat.read(outcome.dest, as_version=4)
    assert nb.metadata["ibnb"]["params"] == {"profile": "smoke", "n": 2}
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "n = 2" in injected[0].source
    assert any("42" in o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert sorted(p.name for p in layout.experiments.iterdir()) == ["tiny.ipynb"]
    assert nb.metadata["papermill"]["output_path"] == "book/experiments/tiny.ipynb"  # no temp path leaks


def test_failing_notebook_leaves_no_partial_output(layout):
    dest = layout.experiments / "tiny.ipynb"
    dest.write_text("OLD EXECUTED COPY")
    make_notebook(layout.notebooks / "tiny.ipynb", body="x = 1\ny = x / 0")
    with pytest.raises(RunnerError) as err:
        run_tiny(layout, profile="smoke")
    msg = str(err.value)
    assert "tiny" in msg and "ZeroDivisionError" in msg and "cell index 3" in msg and "x = 1" in msg
    assert dest.read_text() == "OLD EXECUTED COPY"
    assert sorted(p.name for p in layout.experiments.iterdir()) == ["tiny.ipynb"]


def test_failing_notebook_with_no_previous_copy(layout, capsys):
    make_notebook(layout.notebooks / "tiny.ipynb", body="raise ValueError('boom')")
    code = cli.main(["--repo", str(layout.repo), "run", "--no-progress"])
    assert code == 1
    assert "ValueError: boom" in capsys.readouterr().err
    assert list(layout.experiments.iterdir()) == []


# ----------------------------------------------------------------------------- mark-stale
def _stale_cells(path: Path) -> list:
    nb = nbformat.read(path, as_version=4)
    return [i for i, c in enumerate(nb.cells) if stale.STALE_TAG in c.metadata.get("tags", [])]


def test_mark_stale_inserts_refreshes_and_removes(layout, fake_papermill):
    dest = layout.experiments / "tiny.ipynb"
    run_tiny(layout, profile="smoke")
    code = nbformat.read(dest, as_version=4).metadata["ibnb"]["code_hash"]

    assert stale.mark_stale(layout, code=code, echo=False) == {"tiny": []}
    assert _stale_cells(dest) == []
    before = dest.read_bytes()
    stale.mark_stale(layout, code=code, echo=False)
    assert dest.read_bytes() == before  # untouched when nothing changes

    report = stale.mark_stale(layout, code="ffffffffffff", echo=False)
    assert "ibnb code changed" in report["tiny"][0]
    assert _stale_cells(dest) == [1]
    cell = nbformat.read(dest, as_version=4).cells[1]
    assert cell.cell_type == "markdown" and "{warning}" in cell.source and "make book" in cell.source

    make_notebook(layout.notebooks / "tiny.ipynb", body="result = 7")
    report = stale.mark_stale(layout, code="ffffffffffff", echo=False)
    assert len(report["tiny"]) == 2 and _stale_cells(dest) == [1]  # refreshed, still one cell
    assert "source notebook" in nbformat.read(dest, as_version=4).cells[1].source

    run_tiny(layout, profile="smoke")  # re-executed: current again
    code = nbformat.read(dest, as_version=4).metadata["ibnb"]["code_hash"]
    stale.mark_stale(layout, code="ffffffffffff", echo=False)
    assert _stale_cells(dest) == [1]
    assert stale.mark_stale(layout, code=code, echo=False) == {"tiny": []}
    assert _stale_cells(dest) == []
    nbformat.validate(nbformat.read(dest, as_version=4))


def test_mark_stale_flags_notebooks_without_metadata(layout):
    shutil.copyfile(layout.notebooks / "tiny.ipynb", layout.experiments / "tiny.ipynb")
    report = stale.mark_stale(layout, echo=False)
    assert "not produced by" in report["tiny"][0]


# ----------------------------------------------------------------------------- CLI
def test_cli_help():
    out = subprocess.run([sys.executable, "-m", "ibnb", "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0
    for word in ("run", "mark-stale", "build"):
        assert word in out.stdout


def test_build_command_uses_this_environment():
    cmd = runner.jupyter_book_command()
    assert cmd[0].startswith(str(Path(sys.executable).parent)) or cmd[0] == sys.executable


def test_page_depends_only_on_the_modules_it_imported(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "b.py").write_text("y = 1\n")
    only_a = provenance.code_hash(pkg, files=["a.py"])
    (pkg / "b.py").write_text("y = 2\n")       # a module the page did not import
    (pkg / "c.py").write_text("z = 0\n")       # a new module
    assert provenance.code_hash(pkg, files=["a.py"]) == only_a
    (pkg / "a.py").write_text("x = 2\n")
    assert provenance.code_hash(pkg, files=["a.py"]) != only_a
    (pkg / "a.py").unlink()
    assert provenance.code_hash(pkg, files=["a.py"]) not in (only_a,)  # a removed dependency counts


def test_finish_records_imported_modules_for_the_runner(tmp_path, monkeypatch):
    sidecar = tmp_path / "prov.json"
    monkeypatch.setenv("IBNB_PROVENANCE_FILE", str(sidecar))
    info = provenance.start("nb", {"profile": "smoke"}).finish(display=False)
    deps = json.loads(sidecar.read_text())
    assert "book/provenance.py" in deps["code_files"] and "core/utils.py" in deps["code_files"]
    assert deps["code_hash"] == info["code_hash"] == provenance.code_hash(files=deps["code_files"])


def test_commit_is_dirty_for_code_changes_but_not_for_book_outputs(tmp_path):
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / "book" / "results").mkdir(parents=True)
    (tmp_path / "book" / "results" / "r.csv").write_text("a\n1\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    sha = provenance.git_commit(tmp_path)
    assert not sha.endswith("-dirty") and sha != "unknown"
    (tmp_path / "book" / "results" / "r.csv").write_text("a\n2\n")
    assert provenance.git_commit(tmp_path) == sha
    (tmp_path / "code.py").write_text("x = 2\n")
    assert provenance.git_commit(tmp_path) == sha + "-dirty"


# ----------------------------------------------------------------------------- timings, synthesis pages
def _with_results(paths: Paths) -> Paths:
    return Paths(repo=paths.repo, notebooks=paths.notebooks, experiments=paths.experiments,
                 results=paths.repo / "book" / "results")


def test_every_execution_upserts_its_wall_time(layout, fake_papermill):
    paths = _with_results(layout)
    runner.run_notebooks(["tiny"], paths=paths, progress=False, profile="smoke")
    runner.run_notebooks(["tiny"], paths=paths, progress=False, profile="cpu")
    runner.run_notebooks(["tiny"], paths=paths, progress=False, profile="cpu", force=True)
    t = pd.read_csv(paths.results_dir / "timings.csv")
    assert list(t.columns) == runner.TIMING_COLUMNS
    assert sorted(zip(t["notebook"], t["profile"])) == [("tiny", "cpu"), ("tiny", "smoke")]  # one row each
    assert (t["wall_s"] >= 0).all() and set(t["device"]) == {"unknown"}  # the fake run shows no box


def test_provenance_fields_are_read_from_the_box():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("info = run.finish()")
    box = ("**Provenance of this page**\n\n| field | value |\n|---|---|\n| notebook | `x` |\n"
           "| device | cpu (x86_64) |\n| CPU threads | 2 torch threads / 2 CPUs |\n")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": box})]
    nb.cells = [cell]
    f = runner.provenance_fields(nb)
    assert f == {"notebook": "x", "device": "cpu (x86_64)", "CPU threads": "2 torch threads / 2 CPUs"}
    assert runner.provenance_fields(nbformat.v4.new_notebook()) == {}


def test_synthesis_page_reruns_when_the_results_it_reads_change(layout, fake_papermill):
    paths = _with_results(layout)
    src = paths.notebooks / "summary.ipynb"
    make_notebook(src)
    nb = nbformat.read(src, as_version=4)
    nb.metadata["ibnb"] = {"reads_results": True}
    nbformat.write(nb, src)
    table = paths.results_dir / "tiny" / "cpu.csv"
    table.parent.mkdir(parents=True)
    table.write_text("a\n1\n")

    def run():
        return runner.run_notebooks(["summary"], paths=paths, progress=False)[0].status

    assert run() == "executed"
    assert run() == "skipped"
    runner.run_notebooks(["tiny"], paths=paths, progress=False)  # timings.csv changes: not an input
    assert run() == "executed"  # ... but tiny's executed page is new
    assert run() == "skipped"
    table.write_text("a\n2\n")
    assert run() == "executed"
    assert stale.mark_stale(paths, echo=False)["summary"] == []
    table.write_text("a\n3\n")
    reasons = stale.mark_stale(paths, echo=False)["summary"]
    assert any("results" in r for r in reasons)


def test_synthesis_pages_run_after_the_chapters(layout, fake_papermill):
    src = make_notebook(layout.notebooks / "00_summary.ipynb")
    nb = nbformat.read(src, as_version=4)
    nb.metadata["ibnb"] = {"reads_results": True}
    nbformat.write(nb, src)
    make_notebook(layout.notebooks / "05_chapter.ipynb")
    order = [o.stem for o in runner.run_notebooks(paths=_with_results(layout), progress=False, echo=False)]
    assert order == ["05_chapter", "tiny", "00_summary"]


def test_injected_parameters_are_hidden_like_the_parameters_cell():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("profile = 'cpu'", metadata={"tags": ["parameters", "remove-cell"]}),
                nbformat.v4.new_code_cell("profile = 'smoke'", metadata={"tags": ["injected-parameters"]}),
                nbformat.v4.new_code_cell("x = 1")]
    runner.hide_injected_like_parameters(nb)
    assert nb.cells[1].metadata["tags"] == ["injected-parameters", "remove-cell"]
    assert "tags" not in nb.cells[2].metadata
    shown = nbformat.v4.new_notebook()
    shown.cells = [nbformat.v4.new_code_cell("a = 1", metadata={"tags": ["parameters"]}),
                   nbformat.v4.new_code_cell("a = 2", metadata={"tags": ["injected-parameters"]})]
    runner.hide_injected_like_parameters(shown)
    assert shown.cells[1].metadata["tags"] == ["injected-parameters"]


def test_cpu_timings_name_the_instruction_set():
    """A CPU wall time says which vector units it ran on (AVX-512 BF16 vs AVX2 differ ~3x for conv nets)."""
    from ibnb.book.runner import with_cpu_isa

    cpu = with_cpu_isa("cpu (x86_64)")
    assert cpu.startswith("cpu (x86_64; ") and cpu.endswith(")") and "bf16" in cpu
    assert with_cpu_isa("cuda (NVIDIA H200)") == "cuda (NVIDIA H200)" and with_cpu_isa("unknown") == "unknown"
