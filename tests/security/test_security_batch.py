"""Attack and fault cases on batch outputs and data archives (issue 20).

D12 an archive bomb given to ``pecmae recipe gtzan --data ARCHIVE``, D14 a full disk during
``pecmae classify``, D20 CSV cells that a spreadsheet would run as formulas.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import tarfile
import zipfile

import numpy as np
import pytest
import soundfile as sf
from conftest import tiny_pecmae

from pecmae_hub.batch import results as results_module
from pecmae_hub.batch.results import ResultsFile
from pecmae_hub.cli import main
from pecmae_hub.data import gtzan_source
from pecmae_hub.data.gtzan_source import prepare_gtzan, unpack_archive
from pecmae_hub.errors import DatasetError

pytestmark = pytest.mark.usefixtures("one_thread")
MB = 1024 * 1024


def _write_clips(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        sf.write(folder / name, 0.3 * np.sin(np.arange(30_000) / (3 + i)), 24_000)
    return folder


# ---- D12 ---------------------------------------------------------------------------------------
def _tar_gz(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_d12_an_archive_bomb_is_refused_before_a_byte_is_written(tmp_path):
    bomb = _tar_gz(tmp_path / "genres.tar.gz", {f"genres/blues/blues.{i:05d}.wav": bytes(8 * MB) for i in range(4)})
    assert bomb.stat().st_size < 200 * 1024  # 32 MB of zeros in a small archive
    dest = tmp_path / "unpacked"
    with pytest.raises(DatasetError, match=r"would unpack to 33.6 MB from .* times its size .*at most 100 times"):
        prepare_gtzan(str(bomb), dest)  # what `pecmae recipe gtzan --data ARCHIVE` does
    assert not dest.exists() and not list(tmp_path.glob(".*partial*"))
    zbomb = tmp_path / "genres.zip"
    with zipfile.ZipFile(zbomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("genres/blues/blues.00000.wav", bytes(16 * MB))
    with pytest.raises(DatasetError, match="times its size"):
        unpack_archive(zbomb, dest)
    assert not dest.exists()


def test_d12_the_total_and_the_member_count_are_bounded_too(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    archive = _tar_gz(tmp_path / "a.tar.gz", {f"genres/pop/pop.{i:05d}.wav": rng.bytes(64 * 1024) for i in range(3)})
    monkeypatch.setattr(gtzan_source, "MAX_UNPACKED_BYTES", 100 * 1024)
    with pytest.raises(DatasetError, match=r"would unpack to 0.00 GB \(at most 0.00 GB\)"):
        unpack_archive(archive, tmp_path / "out")
    monkeypatch.setattr(gtzan_source, "MAX_UNPACKED_BYTES", 10 * MB)
    monkeypatch.setattr(gtzan_source, "MAX_MEMBERS", 2)
    with pytest.raises(DatasetError, match="it has 3 members"):
        unpack_archive(archive, tmp_path / "out")
    monkeypatch.setattr(gtzan_source, "MAX_MEMBERS", 10)
    assert len(list((unpack_archive(archive, tmp_path / "out") / "genres" / "pop").iterdir())) == 3  # within bounds


# ---- D14 ---------------------------------------------------------------------------------------
class _FullDisk:
    """A results file on a disk that fills up after ``room`` writes (then closing fails as well)."""

    def __init__(self, handle, room: int):
        self.handle, self.room = handle, room

    def write(self, text: str) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= 1
        return self.handle.write(text)

    def flush(self) -> None:
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")

    def tell(self) -> int:
        return self.handle.tell()


def test_d14_a_full_disk_is_one_typed_message_and_the_rerun_finishes(tmp_path, tiny_model_dir, monkeypatch, capsys):
    clips = _write_clips(tmp_path / "clips", ["a.wav", "b.wav", "c.wav", "d.wav"])
    out = tmp_path / "preds.csv"
    begin = ResultsFile.begin

    def begin_on_a_small_disk(self, *args, **kwargs):
        begin(self, *args, **kwargs)
        self._file = _FullDisk(self._file, room=2)  # two rows fit after the header

    monkeypatch.setattr(ResultsFile, "begin", begin_on_a_small_disk)
    args = ["classify", str(clips), "--model", str(tiny_model_dir), "--out", str(out), "--no-progress"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1
    assert f"cannot write {out}: the disk is full" in err and "run the same command again to continue" in err
    rows = list(csv.DictReader(out.open()))
    assert [r["path"].rsplit("/", 1)[-1] for r in rows] == ["a.wav", "b.wav"]  # what was written is kept
    monkeypatch.setattr(ResultsFile, "begin", begin)
    assert main(args) == 0  # space freed: the rerun does the rest
    rows = list(csv.DictReader(out.open()))
    assert sorted(r["path"].rsplit("/", 1)[-1] for r in rows) == ["a.wav", "b.wav", "c.wav", "d.wav"]


def test_d14_a_full_disk_on_standard_output_is_one_typed_message(tmp_path, tiny_model_dir, monkeypatch, capsys):
    clips = _write_clips(tmp_path / "clips", ["a.wav"])

    class FullStdout(io.StringIO):
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("sys.stdout", FullStdout())
    assert main(["classify", str(clips), "--model", str(tiny_model_dir), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "the disk is full" in err and "Traceback" not in err


# ---- D20 ---------------------------------------------------------------------------------------
FORMULAS = ["=1+2.wav", "+SUM(A1).wav", "-2+3.wav", "@cmd.wav", "'quoted.wav"]


def test_d20_csv_cells_never_start_a_formula_and_jsonl_keeps_values(tmp_path, monkeypatch, capsys):
    _write_clips(tmp_path, FORMULAS)
    monkeypatch.chdir(tmp_path)
    model = tiny_pecmae(labels=("=HYPERLINK(evil)", "piano", "@flute"))
    model_dir = model.save_pretrained(tmp_path / "model")
    common = ["--model", str(model_dir), "--no-progress", "--top-k", "3"]
    assert main(["classify", "--out", "p.csv", *common, "--", *FORMULAS]) == 0
    text = (tmp_path / "p.csv").read_text()
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    assert sorted(r[0] for r in body) == sorted("'" + name for name in FORMULAS)
    for row in body:
        for column, cell in zip(header, row):
            if cell[:1] in ("=", "+", "@", "\t", "\r") or (cell[:1] == "-" and column in ("path", "label", "error")):
                raise AssertionError(f"{column} cell {cell!r} would be read as a formula")
        assert row[header.index("label")] in ("'=HYPERLINK(evil)", "piano", "'@flute")
    assert main(["classify", "--out", "p.csv", *common, "--", *FORMULAS]) == 0  # resumed: rows are recognised
    assert "nothing to do, all 5 inputs are already in p.csv" in capsys.readouterr().err
    assert main(["classify", "--out", "p.jsonl", *common, "--", *FORMULAS]) == 0
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert sorted(r["path"] for r in records) == sorted(FORMULAS)  # JSONL: the values as they are


def test_d20_the_escape_is_reversible():
    for value in ["=x", "+x", "-1", "@x", "\tx", "\rx", "'x", "''x", "x", "", "a=b"]:
        cell = results_module.csv_cell(value)
        assert results_module.csv_value(cell) == value and cell[:1] not in ("=", "+", "-", "@", "\t", "\r")
    assert results_module.csv_cell("plain.wav") == "plain.wav"
