"""Fatal I/O (issue 16): a full disk, a run folder that is no folder or belongs to another program,
a damaged line in outputs.jsonl. Each ends in one clear line and the README's exit code, with
the manifest saying `failed` and why where the folder is writable; nothing already written is
lost, and resume finishes the run once the cause is fixed."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from composer import api, runstore
from conftest import read_jsonl, run_cli, stop_requested_at

N = 60
CONFIG = ["experiment=tiny-sentiment", "input=jsonl", "input.id_field=n", "threads=1", "progress=false", "batch_size=4",
          "sort_window=0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """N input lines, one in ten of them not JSON (errors.jsonl lines among the outputs)."""
    path = tmp_path_factory.mktemp("data") / "input.jsonl"
    lines = ['{"n": "broken' if i % 10 == 3 else json.dumps({"n": i, "text": f"review number {i} " * (1 + i % 4)})
             for i in range(N)]
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def whole(data, tmp_path_factory) -> Path:
    """The uninterrupted run every recovered run must equal."""
    result = api.run([*CONFIG, f"input.path={data}"], run_dir=tmp_path_factory.mktemp("whole") / "run")
    assert result.status == "completed_with_errors"
    return result.run_dir


def _assert_same_as(run_dir: Path, whole: Path) -> None:
    for name in ("outputs.jsonl", "errors.jsonl"):
        assert (run_dir / name).read_bytes() == (whole / name).read_bytes(), name
    counts = json.loads((run_dir / "manifest.json").read_text())["counts"]
    assert counts["records_in"] == N == counts["records_ok"] + counts["records_failed"]
    assert not (run_dir / runstore.RESERVE).exists()


def _disk_full_after(budget: int):
    """os.write on a disk with `budget` bytes left: it writes what fits, then ENOSPC."""
    left = [budget]

    def write(fd: int, data) -> int:
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = os.write(fd, bytes(data[:left[0]]))
        left[0] -= written
        return written

    return write


def test_a_disk_full_mid_run_fails_clearly_keeps_what_was_written_and_resumes(data, whole, tmp_path, monkeypatch):
    """Found by probing: a full disk mid-run gave a raw OSError traceback and "job failed before
    its run started" although 5,637 records were written, and left the manifest `running`."""
    with monkeypatch.context() as patch:
        patch.setattr(runstore, "_write", _disk_full_after(2500))  # runs out inside a batch's lines
        result = api.run([*CONFIG, f"input.path={data}"], run_dir=tmp_path / "run")
    assert (result.status, result.exit_code) == ("failed", 4)
    error = result.manifest()["error"]
    assert error["type"] == "WriteFailed"
    assert error["message"].startswith(f"[Errno 28] could not write outputs.jsonl in {result.run_dir}: No space left on device")
    assert f"composer resume {result.run_dir}" in error["message"]
    written = (result.run_dir / "outputs.jsonl").read_bytes()
    assert written and written.endswith(b"\n")  # the failed batch is taken back whole: no torn line
    assert (whole / "outputs.jsonl").read_bytes().startswith(written)
    assert not (result.run_dir / runstore.RESERVE).exists()
    resumed = api.resume(result.run_dir)  # the disk has room again
    assert resumed.status == "completed_with_errors"
    _assert_same_as(result.run_dir, whole)


@pytest.fixture()
def tiny_disk(tmp_path):
    """A real 1 MiB filesystem (tmpfs), where the machine lets this process mount one (root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_real_full_disk_via_the_cli(tiny_disk, tmp_path):
    """The same on a real filesystem that fills up: the closing manifest and metrics still fit
    (the space reserve is given back first), and one clear error line, exit 4."""
    rows = [json.dumps({"n": i, "text": f"a review long enough to fill the disk, number {i} " * 3}) for i in range(6000)]
    data = tmp_path / "big.jsonl"
    data.write_text("".join(row + "\n" for row in rows))
    run_dir = tiny_disk / "run"
    done = run_cli("run", *CONFIG, f"input.path={data}", "batch_size=64", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    said = done.stdout + done.stderr  # the run's report, wherever the CLI prints it
    assert done.returncode == 4, said
    assert "Traceback" not in said
    assert f"could not write outputs.jsonl in {run_dir}: No space left on device" in said
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"]["type"] == "WriteFailed"
    kept = read_jsonl(run_dir / "outputs.jsonl")
    assert 0 < len(kept) < 6000 and manifest["counts"]["records_ok"] == len(kept)
    subprocess.run(["mount", "-o", "remount,size=16m", str(tiny_disk)], check=True)
    done = run_cli("resume", str(run_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [row["id"] for row in read_jsonl(run_dir / "outputs.jsonl")] == [str(i) for i in range(6000)]


@pytest.mark.parametrize("where", ["/dev/null", "a-file", "a-file/run"])
def test_a_run_folder_that_is_no_folder_is_one_clear_line_exit_2(where, data, tmp_path):
    """Found by probing: hydra.run.dir=/dev/null gave a raw FileExistsError traceback."""
    (tmp_path / "a-file").write_text("not a folder")
    target = where if where.startswith("/") else str(tmp_path / where)
    done = run_cli("run", *CONFIG, f"input.path={data}", f"hydra.run.dir={target}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "is not a folder" in done.stderr and f"hydra.run.dir: {target}" in done.stderr
    assert (tmp_path / "a-file").read_text() == "not a folder"


@pytest.fixture()
def read_only_folder(tmp_path):
    """A folder this process cannot write: by its mode, or (root writes anywhere) a read-only tmpfs."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if not os.access(folder, os.W_OK):
        yield folder
        folder.chmod(0o755)
        return
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                                                         capture_output=True).returncode != 0:
        pytest.skip("no way to make a folder this process cannot write")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_run_folder_that_cannot_be_written_is_one_clear_line_exit_2(read_only_folder, data, tmp_path):
    for target in (read_only_folder, read_only_folder / "run"):
        done = run_cli("run", *CONFIG, f"input.path={data}", f"hydra.run.dir={target}", cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert f"cannot write into {read_only_folder} (no permission, or a read-only filesystem)" in done.stderr


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(folder.rglob("*"))}


def test_a_folder_composer_did_not_make_is_refused_before_anything_is_written(data, tmp_path):
    """Found by probing: hydra.run.dir = a folder holding another program's outputs.jsonl got 24
    records appended to it, then exit 4 with a JSONDecodeError and a manifest left `running`."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "outputs.jsonl").write_text('{"their": "data"}\n')
    (theirs / "notes.txt").write_text("keep me")
    before = _snapshot(theirs)
    done = run_cli("run", *CONFIG, f"input.path={data}", f"hydra.run.dir={theirs}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert (f"hydra.run.dir: {theirs} was not made by composer (it holds notes.txt, outputs.jsonl and no manifest.json), "
            "so nothing is written into it") in done.stderr
    assert _snapshot(theirs) == before
    with pytest.raises(runstore.FolderRefused):
        api.run([*CONFIG, f"input.path={data}"], run_dir=theirs)
    assert _snapshot(theirs) == before
    # Another program's manifest.json does not make a composer run folder either.
    (theirs / "manifest.json").write_text('{"name": "my web app", "version": 2}')
    before = _snapshot(theirs)
    done = run_cli("run", *CONFIG, f"input.path={data}", f"hydra.run.dir={theirs}", cwd=tmp_path)
    assert done.returncode == 2 and "holds a manifest.json that composer did not write" in done.stderr
    done = run_cli("resume", str(theirs), cwd=tmp_path)
    assert done.returncode == 2 and "holds a manifest.json that composer did not write" in done.stderr
    assert _snapshot(theirs) == before


def test_a_damaged_middle_line_fails_the_resume_naming_it_then_resumes_once_cut(data, whole, tmp_path, monkeypatch):
    """Found by probing: a damaged line in the middle of outputs.jsonl made resume exit 1 with a
    traceback from runstore.written_ids that named no line."""
    with monkeypatch.context() as patch:
        patch.setattr("composer.run._StopRequests", stop_requested_at(5))
        stopped = api.run([*CONFIG, f"input.path={data}"], run_dir=tmp_path / "run")
    assert stopped.status == "interrupted"
    outputs = stopped.run_dir / "outputs.jsonl"
    lines = outputs.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 8
    lines[4] = lines[4][:25] + b"\xff\n"  # cut short, a stray byte: neither UTF-8 nor JSON
    outputs.write_bytes(b"".join(lines))
    damaged = outputs.read_bytes()
    done = run_cli("resume", str(stopped.run_dir), cwd=tmp_path)
    said = done.stdout + done.stderr  # the run's report, wherever the CLI prints it
    assert done.returncode == 4, said
    assert "Traceback" not in said
    assert f"{outputs} line 5 is not valid JSON" in said and "head -n 4" in said
    manifest = json.loads((stopped.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["exit_code"] == 4
    assert manifest["error"]["type"] == "RunFolderError" and f"{outputs} line 5" in manifest["error"]["message"]
    assert outputs.read_bytes() == damaged  # nothing written, nothing cut
    outputs.write_bytes(b"".join(lines[:4]))  # the message's advice: cut the file before the line
    done = run_cli("resume", str(stopped.run_dir), cwd=tmp_path)
    assert done.returncode == 1, done.stderr  # completed, with the input's record errors
    _assert_same_as(stopped.run_dir, whole)
