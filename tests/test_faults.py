"""Fault suite (issue 15): every way a run can meet bad input or be cut short, reproduced on tiny synthetic data.

Each test asserts the message (it names the file or run, what was expected, what was found and the fix), the
exit status where there is a process, and that nothing was left half-written. Cases: truncated tar, corrupt
JPEG, truncated IDX, garbage decoded cache, corrupt checkpoint and final, NaN, SIGINT and SIGKILL mid-run, two
concurrent runners, read-only destination, corrupted results table, no network with download on.
Real network is never used; real kernels and subprocesses only where a signal or a second process is the case.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from ibnb.book import cli, results, runner
from ibnb.book.runner import Paths
from ibnb.core import data as D
from ibnb.core.runs import runs_dir, train_or_load
from ibnb.core.train import NonFiniteLossError, StepOutput, TrainConfig
from conftest import CIFAR_CLASSES, toy_data, write_image_tar
from test_pipeline import fake_papermill, layout, make_notebook  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- helpers
@dataclass(frozen=True)
class NaNAfter:
    """Cross-entropy, but the loss turns NaN from epoch ``after`` on (a diverging run)."""

    after: int = 0

    def __call__(self, model, opt, x, y, epoch):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if epoch >= self.after:
            loss = loss * float("nan")
        return StepOutput(loss.detach(), logits.detach())


@dataclass(frozen=True)
class SlowStep:
    """Cross-entropy with a pause per step, so a second process or a signal can meet the run mid-training."""

    pause: float = 0.05

    def __call__(self, model, opt, x, y, epoch):
        time.sleep(self.pause)
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return StepOutput(loss.detach(), logits.detach())


TOY_CFG = dict(epochs=2, batch_size=16, lr=1e-3)
MLP_KW = {"width": 16, "depth": 1}


def toy_run(step=None, **cfg):
    """A tiny MLP run on 4×8 toy images (about a tenth of a second)."""
    config = TrainConfig(**{**TOY_CFG, **cfg})
    return train_or_load("mlp", toy_data(8, 4, 8), config=config, model_kw=MLP_KW, step=step, device="cpu",
                         progress=False)


def run_folder() -> Path:
    [folder] = [p for p in runs_dir().iterdir() if p.is_dir()]
    return folder


def leftovers(folder: Path) -> list[str]:
    """Half-written files: atomic-write temporaries."""
    return sorted(p.name for p in folder.rglob(".*.tmp"))


def child_env(tmp_path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]), TMPDIR=str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir(exist_ok=True)
    return env


TRAIN_SCRIPT = """
import sys, time
from test_faults import SlowStep, toy_run
t0 = time.perf_counter()
_, hist, cached = toy_run(step=SlowStep({pause}), epochs={epochs})
print(f"cached={{cached}} epochs={{len(hist.frame)}} seconds={{time.perf_counter() - t0:.1f}}", flush=True)
"""


def start_training(tmp_path: Path, epochs: int, pause: float = 0.05) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT.format(epochs=epochs, pause=pause)],
                            env=child_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for(predicate, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    t0 = time.perf_counter()
    while not predicate():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process ended early: {proc.communicate()}")
        if time.perf_counter() - t0 > timeout:
            pytest.fail("timed out")
        time.sleep(0.05)


def tar_root(tmp_path: Path, monkeypatch, per_class: int = 2) -> Path:
    root = tmp_path / "data"
    write_image_tar(root / "cifar10" / "train.tar", "train", CIFAR_CLASSES, per_class, 32, "JPEG")
    from conftest import tiny_registry

    tiny_registry(monkeypatch, "cifar10", train=10 * per_class, test=10 * per_class)
    return root


def no_cache_written() -> bool:
    cache = D.data_cache_dir()
    return not cache.exists() or not [p for p in cache.rglob("*") if p.suffix in (".pt", ".tmp")]


# ----------------------------------------------------------------------------- data
def test_truncated_tar_is_never_accepted_and_a_good_copy_fixes_it(tmp_path, monkeypatch):
    root = tar_root(tmp_path, monkeypatch, per_class=4)
    tar = root / "cifar10" / "train.tar"
    good = tar.read_bytes()
    with tarfile.open(tar) as t:
        members = t.getmembers()
    cut = members[len(members) // 2].offset  # at a member boundary: tarfile sees a clean end of the archive
    tar.write_bytes(good[:cut])
    t0 = time.perf_counter()
    with pytest.raises(D.DataError) as e:
        D.load_dataset("cifar10", "train", root=root)
    msg = str(e.value)
    assert str(tar) in msg and "decoded 20 images" in msg and "expected 40" in msg and "truncated" in msg, msg
    assert "Fix:" in msg and "sha256sum -c SHA256SUMS" in msg
    assert no_cache_written()  # nothing decoded from the bad file was kept
    print(f"TIMING truncated tar: {time.perf_counter() - t0:.2f} s")
    tar.write_bytes(good)  # copying the good tar back fixes it: no stale extraction or cache
    assert D.load_dataset("cifar10", "train", root=root).class_counts() == [4] * 10


def test_sha256sums_mismatch_names_file_expected_found_and_fix(tmp_path, monkeypatch):
    root = tar_root(tmp_path, monkeypatch)
    tar = root / "cifar10" / "train.tar"
    digest = hashlib.sha256(tar.read_bytes()).hexdigest()
    (root / "SHA256SUMS").write_text(f"{digest}  cifar10/train.tar\n")
    assert len(D.load_dataset("cifar10", "train", root=root)) == 20
    blob = bytearray(tar.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # same size, one byte different
    tar.write_bytes(bytes(blob))
    with pytest.raises(D.DataError) as e:
        D.load_dataset("cifar10", "train", root=root)
    msg = str(e.value)
    assert str(tar) in msg and digest[:16] in msg and "does not match" in msg and "sha256sum -c" in msg


def test_corrupt_jpeg_names_the_member_and_the_tar(tmp_path, monkeypatch):
    root = tar_root(tmp_path, monkeypatch)
    tar = root / "cifar10" / "train.tar"
    members = []
    with tarfile.open(tar) as t:
        for m in t.getmembers():
            members.append((m, t.extractfile(m).read()))
    with tarfile.open(tar, "w") as t:
        for i, (m, blob) in enumerate(members):
            if i == 5:
                blob = b"\xff\xd8\xff\xe0 this is not a JPEG" + b"\0" * 64
                m.size = len(blob)
            t.addfile(m, io.BytesIO(blob))
    t0 = time.perf_counter()
    with pytest.raises(D.DataError) as e:
        D.load_dataset("cifar10", "train", root=root)
    msg = str(e.value)
    assert str(tar) in msg and members[5][0].name in msg and "not a readable image" in msg and "Fix:" in msg
    assert no_cache_written()
    print(f"TIMING corrupt JPEG: {time.perf_counter() - t0:.2f} s")


def test_truncated_idx_is_reported_as_truncated_not_missing(mnist_root, monkeypatch):
    images = mnist_root / "mnist" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    t0 = time.perf_counter()
    with pytest.raises(D.DataError) as e:
        D.load_dataset("mnist", "train", root=mnist_root)
    msg = str(e.value)
    assert str(images) in msg and "40×28×28" in msg and "31,376 bytes" in msg and "5,000 bytes" in msg
    assert "truncated" in msg and "not found" not in msg and "IBNB_DOWNLOAD=1" not in msg
    assert no_cache_written()
    print(f"TIMING truncated IDX: {time.perf_counter() - t0:.2f} s")


def test_garbage_decoded_cache_is_reported_and_rebuilt(mnist_root, capsys):
    first = D.load_dataset("mnist", "train", root=mnist_root)
    [cache] = D.data_cache_dir().glob("mnist-train*.pt")
    cache.write_bytes(b"garbage, not a torch file")
    t0 = time.perf_counter()
    again = D.load_dataset("mnist", "train", root=mnist_root)
    err = capsys.readouterr().err
    assert "ignoring unreadable decoded-data cache" in err and str(cache) in err
    assert torch.equal(first.x, again.x)
    assert torch.load(cache, weights_only=True)["x"].shape == first.x.shape  # rewritten whole
    assert leftovers(D.data_cache_dir()) == []
    print(f"TIMING garbage cache: {time.perf_counter() - t0:.2f} s")


def test_replacing_a_source_file_invalidates_the_decoded_cache(mnist_root):
    labels = mnist_root / "mnist" / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    D.load_dataset("mnist", "train", root=mnist_root)
    from conftest import write_idx
    import numpy as np

    write_idx(labels, (np.arange(40) + 1) % 10)  # same size, new content
    assert D.load_dataset("mnist", "train", root=mnist_root).y[0].item() == 1


def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.ENETUNREACH, "Network is unreachable (no network in this test)")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_download_on_without_network_fails_fast_and_does_not_ask_to_set_it(name, tmp_path, monkeypatch):
    _no_network(monkeypatch)
    monkeypatch.setenv("IBNB_DOWNLOAD", "1")
    t0 = time.perf_counter()
    with pytest.raises(D.DataError) as e:
        D.load_dataset(name, "train", root=tmp_path / "empty")
    seconds = time.perf_counter() - t0
    msg = str(e.value)
    assert "downloading it failed" in msg and "IBNB_DOWNLOAD is set" in msg and "Network is unreachable" in msg
    assert "set IBNB_DOWNLOAD=1" not in msg and "URLError" not in type(e.value).__name__
    assert "Fix:" in msg and seconds < 10
    print(f"TIMING no network ({name}): {seconds:.2f} s")


# ----------------------------------------------------------------------------- run cache
def test_corrupt_final_is_reported_with_its_run_moved_aside_and_retrained(capsys):
    toy_run()
    folder = run_folder()
    (folder / "final.pt").write_bytes(b"not a zip archive")
    t0 = time.perf_counter()
    _, _, cached = toy_run()
    err = capsys.readouterr()
    assert not cached
    assert "final.pt of run mlp" in err.err and "n_train=32" in err.err and "seed=0" in err.err
    assert "moved it aside" in err.err and "final.pt" not in err.out
    assert len(list(folder.glob("final.pt.unreadable-*"))) == 1
    assert toy_run()[2]  # the retrained final is readable
    assert leftovers(folder) == []
    print(f"TIMING corrupt final: {time.perf_counter() - t0:.2f} s")


def test_corrupt_checkpoint_is_reported_moved_aside_and_retrained(capsys):
    toy_run()
    folder = run_folder()
    (folder / "final.pt").unlink()
    (folder / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated zip")
    t0 = time.perf_counter()
    _, hist, cached = toy_run()
    err = capsys.readouterr().err
    assert not cached and len(hist.frame) == 2
    assert "checkpoint.pt of run mlp" in err and "augment=none" in err and "moved it aside" in err
    assert not (folder / "checkpoint.pt").exists() and (folder / "final.pt").exists()
    assert len(list(folder.glob("checkpoint.pt.unreadable-*"))) == 1
    print(f"TIMING corrupt checkpoint: {time.perf_counter() - t0:.2f} s")


def test_nan_names_the_run_and_points_only_at_files_that_exist():
    t0 = time.perf_counter()
    with pytest.raises(NonFiniteLossError) as e:
        toy_run(step=NaNAfter(0))
    msg = str(e.value)
    assert "Non-finite training loss in epoch 1" in msg and "mlp" in msg
    assert "n_train=32" in msg and "seed=0" in msg and "augment=none" in msg and "lr=0.001" in msg
    assert "No checkpoint of this run exists" in msg and "checkpoint.pt" not in msg
    assert e.value.checkpoint is None and e.value.run["n_train"] == 32
    print(f"TIMING NaN: {time.perf_counter() - t0:.2f} s")

    with pytest.raises(NonFiniteLossError) as e:
        toy_run(step=NaNAfter(1), epochs=3)
    msg = str(e.value)
    assert "epoch 2" in msg and "after epoch 1" in msg
    assert e.value.checkpoint is not None and e.value.checkpoint.exists() and str(e.value.checkpoint) in msg
    assert not (e.value.checkpoint.parent / "final.pt").exists()


def test_sigkill_mid_run_keeps_the_checkpoint_and_the_next_run_resumes(tmp_path):
    proc = start_training(tmp_path, epochs=12)
    wait_for(lambda: any(runs_dir().glob("*/checkpoint.pt")), proc=proc)
    t0 = time.perf_counter()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    folder = run_folder()
    assert not (folder / "final.pt").exists()
    state = torch.load(folder / "checkpoint.pt", weights_only=False)  # whole: written atomically
    done = state["epoch"]
    assert 1 <= done < 12
    (folder / ".checkpoint.pt.abc123.tmp").write_bytes(b"half")  # what a kill during torch.save leaves
    _, hist, cached = toy_run(step=SlowStep(0.05), epochs=12)  # the lock was released by the kill
    assert not cached and len(hist.frame) == 12 and leftovers(folder) == []
    assert not (folder / "checkpoint.pt").exists()
    print(f"TIMING SIGKILL (run cache): resumed from epoch {done} in {time.perf_counter() - t0:.2f} s")


def test_two_concurrent_runners_train_a_run_once(tmp_path):
    t0 = time.perf_counter()
    first, second = start_training(tmp_path, epochs=40), start_training(tmp_path, epochs=40)  # ~4 s of training
    out1, err1 = first.communicate(timeout=120)
    out2, err2 = second.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    flags = sorted([out1.split()[0], out2.split()[0]])
    assert flags == ["cached=False", "cached=True"], (out1, out2)
    waiter = err2 if "cached=True" in out2 else err1
    assert "is being trained by another process (pid" in waiter and "reusing its result" in waiter
    print(f"TIMING two runners: {time.perf_counter() - t0:.2f} s")


# ----------------------------------------------------------------------------- runner
def _start_runner(paths: Paths, tmp_path: Path, stem: str) -> subprocess.Popen:
    env = child_env(tmp_path)
    env["IBNB_RESULTS"] = str(paths.repo / "book" / "results")
    return subprocess.Popen([sys.executable, "-m", "ibnb", "--repo", str(paths.repo), "run", stem, "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


SLOW_CELL = "import pathlib, time\npathlib.Path('started').write_text('x')\ntime.sleep(120)"


def _slow_layout(layout: Paths) -> tuple[Path, bytes]:
    make_notebook(layout.notebooks / "tiny.ipynb", body=SLOW_CELL)
    dest = layout.experiments / "tiny.ipynb"
    dest.write_text("PREVIOUS EXECUTED COPY")
    timings = layout.repo / "book" / "results" / "timings.csv"
    timings.parent.mkdir(parents=True, exist_ok=True)
    timings.write_text(",".join(results.TIMING_COLUMNS) + "\ntiny,cpu,1.0,2025-01-01T00:00:00Z,cpu,1,19229e2\n")
    return dest, timings.read_bytes()


@pytest.mark.parametrize("sig", ["SIGINT", "SIGKILL"])
def test_signal_mid_execution_keeps_previous_page(sig, layout, tmp_path):
    dest, timings = _slow_layout(layout)
    scratch = tmp_path / "scratch"
    proc = _start_runner(layout, tmp_path, "tiny")
    wait_for(lambda: (layout.repo / "started").exists(), timeout=90, proc=proc)
    t0 = time.perf_counter()
    os.killpg(proc.pid, getattr(signal, sig))
    out, err = proc.communicate(timeout=60)
    seconds = time.perf_counter() - t0
    assert dest.read_text() == "PREVIOUS EXECUTED COPY"
    assert (layout.repo / "book" / "results" / "timings.csv").read_bytes() == timings
    assert sorted(p.name for p in layout.experiments.iterdir()) == ["tiny.ipynb"]
    temp = [p for p in scratch.glob("ibnb-tiny-*")]
    if sig == "SIGINT":
        assert proc.returncode == 130
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("interrupted: tiny stopped after"), err
        assert "previous executed page is untouched" in lines[0] and "Traceback" not in err
        assert temp == []
    else:
        assert proc.returncode == -signal.SIGKILL
        assert len(temp) == 1  # nothing runs after kill -9 ...
        removed = runner.sweep_stale_temp_folders()  # the layout points this process's temp folder there too
        assert removed == temp and not temp[0].exists()  # ... the next runner sweeps it
    print(f"TIMING {sig} (runner): {seconds:.2f} s to stop; rc {proc.returncode}")


def test_operator_warnings_reach_the_terminal_not_the_page(layout, capfd):
    body = ("import pathlib\nfrom ibnb.core.utils import warn_operator\n"
            "warn_operator(f'ignoring unreadable cached run {pathlib.Path.cwd()}/runs/x/final.pt')\n"
            "print(pathlib.Path.cwd() / 'book' / 'results', pathlib.Path.home() / '.cache')")
    make_notebook(layout.notebooks / "tiny.ipynb", body=body)
    [outcome] = runner.run_notebooks(["tiny"], paths=layout, progress=False)
    err = capfd.readouterr().err
    assert "tiny: ibnb: ignoring unreadable cached run" in err and "replaced absolute paths" in err
    nb = nbformat.read(outcome.dest, as_version=4)
    page = json.dumps([c.get("outputs", []) for c in nb.cells]) + json.dumps(nb.metadata)
    assert "ignoring unreadable" not in page and str(layout.repo) not in page and str(Path.home()) not in page
    assert "./book/results ~/.cache" in page


def _read_only(monkeypatch, folder: Path) -> None:
    """``folder`` behaves like a read-only mount (EROFS) for this process, even for root."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o555)
    real_open, real_mkdir = os.open, os.mkdir

    def guard(path, *args, **kwargs):
        if Path(os.fsdecode(path)).resolve().is_relative_to(folder.resolve()):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

    def fake_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            guard(path)
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        guard(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


@pytest.mark.parametrize("which, var", [("results", "IBNB_RESULTS"), ("runs", "IBNB_RUNS")])
def test_read_only_destination_fails_before_executing(which, var, layout, fake_papermill, monkeypatch, capsys,
                                                      tmp_path):
    target = tmp_path / f"ro-{which}"
    monkeypatch.setenv(var, str(target))
    _read_only(monkeypatch, target)
    t0 = time.perf_counter()
    code = cli.main(["--repo", str(layout.repo), "run", "tiny", "--no-progress"])
    seconds = time.perf_counter() - t0
    os.chmod(target, 0o755)
    err = capsys.readouterr().err
    assert code == 1 and fake_papermill == []  # nothing was executed
    assert str(target) in err and "not writable" in err and "nothing was executed" in err and var in err
    assert list(layout.experiments.iterdir()) == [] and list((tmp_path / "scratch").glob("ibnb-tiny-*")) == []
    print(f"TIMING read-only {which}: {seconds:.2f} s")


# ----------------------------------------------------------------------------- results tables
ROW = dict(experiment="e", model="cnn", dataset="cifar10", n_train=10, seed=0, epochs=1, params=5, test_acc=0.5,
           test_nll=1.0, wall_s=1.0, images_per_s=10.0, device="cpu")


@pytest.mark.parametrize("damage, expect", [
    (lambda t: t.replace(",test_acc", ",accuracy"), ["column(s) ['test_acc'] missing"]),
    (lambda t: t.replace("0.7,", "abc,"), ["line 3 (data row 2)", "column 'test_acc'", "found 'abc'"]),
    (lambda t: t + "garbage row\n", ["line 4", "1 fields, expected 12"]),
])
def test_corrupted_results_table_names_file_row_and_column(damage, expect):
    path = results.write_results([ROW, {**ROW, "seed": 1, "test_acc": 0.7}], "nb", "cpu")
    path.write_text(damage(path.read_text()))
    t0 = time.perf_counter()
    for read in (lambda: results.read_results("nb", "cpu"), lambda: results.read_all("cpu")):
        with pytest.raises(results.ResultsError) as e:
            read()
        msg = str(e.value)
        assert str(path) in msg and all(x in msg for x in expect), msg
        assert "python -m ibnb run nb --profile cpu --force" in msg
    print(f"TIMING corrupted results table: {time.perf_counter() - t0:.3f} s")


def test_timings_commit_stays_a_string_and_damage_stops_the_runner_first(layout, fake_papermill, capsys):
    root = layout.repo / "book" / "results"
    root.mkdir(parents=True)
    (root / "timings.csv").write_text(",".join(results.TIMING_COLUMNS)
                                      + "\ntiny,cpu,1.5,2025-01-01T00:00:00Z,cpu,2,19229e2\n")
    t = results.read_timings(root)
    assert t["commit"].tolist() == ["19229e2"] and t["wall_s"].tolist() == [1.5]
    (root / "timings.csv").write_text(",".join(results.TIMING_COLUMNS) + "\ntiny,cpu,fast,x,cpu,2,19229e2\n")
    paths = Paths(repo=layout.repo, notebooks=layout.notebooks, experiments=layout.experiments, results=root)
    with pytest.raises(runner.RunnerError, match="column 'wall_s': expected a number, found 'fast'"):
        runner.run_notebooks(["tiny"], paths=paths, progress=False)
    assert fake_papermill == []


def test_a_waiter_names_a_holder_that_has_not_yet_written_its_pid(tmp_path):
    """The holder writes its note just after it takes the lock; a waiter that reads the file in between must wait for
    the note rather than report an "unknown" holder (the race CI hit once)."""
    import threading

    from ibnb.core.utils import _lock_holder

    path = tmp_path / ".lock"
    path.write_text("")
    threading.Timer(0.2, lambda: path.write_text("pid 4242")).start()
    with open(path, "a+") as f:
        assert _lock_holder(f) == "pid 4242"
    path.write_text("")
    with open(path, "a+") as f:
        assert _lock_holder(f, patience=0.05) == "unknown"
