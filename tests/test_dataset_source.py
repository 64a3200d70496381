"""Hugging Face datasets as input: columns, row ids, errors (in memory and from the local Hub server)."""

from __future__ import annotations

import io
import json

import pytest

from pecmae_hub.cli import main
from pecmae_hub.dataset_source import DatasetSource, open_source, parse_dataset_uri
from pecmae_hub.errors import ConfigError, DatasetError

datasets = pytest.importorskip("datasets")


def _table(audio_files, with_id: bool = True, extra_audio: bool = False):
    """An in-memory dataset like those on the Hub: an Audio column of file bytes (+ an id column)."""
    import pyarrow as pa

    names = ["wav", "flac", "corrupt"]
    audio_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    columns = {"audio": pa.array([{"bytes": audio_files[n].read_bytes(), "path": n} for n in names], audio_type)}
    features = {"audio": {"_type": "Audio"}}
    if extra_audio:
        columns["other"], features["other"] = columns["audio"], {"_type": "Audio"}
    if with_id:
        columns["id"], features["id"] = [f"row-{n}" for n in names], {"dtype": "string", "_type": "Value"}
    table = pa.table(columns).replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    return datasets.Dataset(table)


def test_dataset_uri_is_parsed_and_checked():
    assert parse_dataset_uri("hf://datasets/acme/clips") == ("acme/clips", None)
    assert parse_dataset_uri("hf://datasets/acme/clips@v1.0") == ("acme/clips", "v1.0")
    with pytest.raises(ConfigError, match="not a dataset address"):
        parse_dataset_uri("hf://datasets/clips")
    with pytest.raises(ConfigError, match="one hf://datasets/ORG/NAME input alone"):
        open_source(["hf://datasets/acme/clips", "a.wav"])
    with pytest.raises(ConfigError, match="apply to hf://datasets/... inputs only"):
        open_source(["a.wav"], split="test")


def test_columns_are_chosen_or_the_error_says_which(audio_files):
    src = DatasetSource.open(_table(audio_files))
    assert (src.audio_column, src.id_column) == ("audio", "id")  # "id" is taken when present
    assert src.input_keys() == ["row-wav", "row-flac", "row-corrupt"]
    assert DatasetSource.open(_table(audio_files, with_id=False)).input_keys() == ["0", "1", "2"]  # the index
    with pytest.raises(DatasetError, match=r"--audio-column \(Audio columns: audio, other\)"):
        DatasetSource.open(_table(audio_files, extra_audio=True))
    with pytest.raises(DatasetError, match="has no id column 'track'"):
        DatasetSource.open(_table(audio_files), id_column="track")


def test_classify_dataset_gives_the_file_predictions_and_a_failure_row(tiny_model_dir, audio_files, one_thread):
    from pecmae_hub.pipeline import PECMAE

    model = PECMAE.from_pretrained(tiny_model_dir, device="cpu")
    results = dict(model.classify_dataset(_table(audio_files, with_id=False)))
    assert list(results) == ["0", "1", "2"]
    for key, name in (("0", "wav"), ("1", "flac")):
        assert results[key].ok and results[key].scores == model.classify(audio_files[name]).scores
    assert not results["2"].ok and results["2"].error == "AudioError" and results["2"].source == "2"


def _parquet_repo(audio_files, splits=("train", "test")) -> dict[str, bytes]:
    import pyarrow.parquet as pq

    table = _table(audio_files).data.table
    files = {}
    for split in splits:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        files[f"data/{split}-00000-of-00001.parquet"] = buf.getvalue()
    return files


def test_hub_dataset_split_is_required_when_there_are_several(hub, tiny_model_dir, audio_files, tmp_path, capsys):
    hub.add_files("acme/two-splits", _parquet_repo(audio_files), repo_type="dataset")
    base = ["classify", "hf://datasets/acme/two-splits", "--model", str(tiny_model_dir), "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "a.csv")]) == 1
    assert "has the splits train, test: choose one with --split" in capsys.readouterr().err
    assert main([*base, "--split", "valid", "--out", str(tmp_path / "a.csv")]) == 1
    assert "has no split 'valid'" in capsys.readouterr().err
    assert main([*base, "--split", "test", "--out", str(tmp_path / "a.csv")]) == 3  # the corrupt row failed
    err = capsys.readouterr().err
    assert "2 classified, 0 skipped" in err and "failed: row-corrupt: AudioError" in err
    assert main(["classify", "hf://datasets/acme/missing", "--model", str(tiny_model_dir)]) == 1
    assert "cannot stream hf://datasets/acme/missing" in capsys.readouterr().err


def test_dataset_of_audio_files_needs_its_parquet_conversion(hub, tiny_model_dir, audio_files, tmp_path, capsys):
    """`datasets` 5 reads a folder of audio files only through torchcodec, which is not installed here."""
    pytest.importorskip("datasets")
    if __import__("importlib").util.find_spec("torchcodec") is not None:
        pytest.skip("torchcodec is installed: folder datasets are readable")
    files = {"test/a.wav": audio_files["wav"].read_bytes(), "test/metadata.csv": b"file_name,id\na.wav,x\n"}
    hub.add_files("acme/folder", files, repo_type="dataset")
    args = ["classify", "hf://datasets/acme/folder", "--model", str(tiny_model_dir), "--out", str(tmp_path / "a.csv")]
    assert main(args) == 1
    assert "hf://datasets/ORG/NAME@refs/convert/parquet" in capsys.readouterr().err
