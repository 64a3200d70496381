"""Tests of pecmae_hub.datasets: label maps, GTZAN paper split, Medley-Solos-DB CSV, TSV and folders."""

from __future__ import annotations

import pytest

from pecmae_hub.data import split_files
from pecmae_hub.data import splits as ds
from pecmae_hub.errors import ConfigError, DatasetError

# docs/architecture.md §11.2 table, with the bogus train row reggae/reggae.99986 removed (79 -> 78, 732 -> 731)
GTZAN_COUNTS = {
    "train": [80, 73, 79, 73, 75, 75, 68, 73, 78, 57],
    "val": [10, 10, 10, 10, 9, 10, 9, 10, 10, 8],
    "test": [10, 9, 9, 9, 9, 10, 7, 9, 9, 10],
}


def all_gtzan_names(ext=".wav"):
    return [f"{g}/{g}.{t:05d}{ext}" for g in ds.GTZAN_GENRES for t in range(100)]


def test_label_maps_in_spec_order():
    assert ds.label_map("gtzan") == (
        "blues",
        "classical",
        "country",
        "disco",
        "hiphop",
        "jazz",
        "metal",
        "pop",
        "reggae",
        "rock",
    )
    assert ds.label_aliases("gtzan")["blu"] == "blues" and ds.label_aliases("gtzan")["roc"] == "rock"
    assert ds.label_map("medley-solos-db")[1] == "distorted electric guitar"
    assert len(ds.label_map("medley_solos")) == 8 and ds.MEDLEY_SOLOS_LABELS[7] == "violin"
    xai = ds.label_map("xai_genre")
    assert len(xai) == 24 and xai[17:] == ("punk", "techno", "trance", "salsa", "samba", "soul", "swing")
    assert list(xai) != sorted(xai)
    assert ds.label_map("nsynth")[-1] == "vocal" and "synth_lead" not in ds.NSYNTH_LABELS
    with pytest.raises(ConfigError):
        ds.label_map("nope")


def test_gtzan_split_rule():
    assert [ds.gtzan_split_of(t) for t in (0, 7, 8, 9, 18, 99)] == ["train", "train", "val", "test", "val", "test"]


def test_gtzan_counts_from_names():
    names = all_gtzan_names() + ["reggae/reggae.99986.wav", "blues/readme.txt"]
    splits = ds.gtzan_splits_from_names(names)
    assert splits.labels == ds.GTZAN_GENRES
    assert (len(splits.train), len(splits.val), len(splits.test)) == (731, 96, 91)
    for name, counts in GTZAN_COUNTS.items():
        assert splits.counts(name) == counts, name
    assert ("blues", "blues/blues.00000.wav") in splits.train
    assert ("jazz", "jazz/jazz.00054.wav") not in splits.train  # excluded (the corrupt file)
    assert all(path.endswith("9.wav") for _, path in splits.test)
    assert all(path.endswith("8.wav") for _, path in splits.val)
    every = [p for n in ds.SPLIT_NAMES for _, p in splits.split(n)]
    assert len(set(every)) == 918


def test_gtzan_bare_names_and_au():
    names = [n.split("/")[1] for n in all_gtzan_names(".au")]
    splits = ds.gtzan_splits_from_names(names)
    assert splits.train[0] == ("blues", "blues/blues.00000.au") and len(splits.train) == 731


def test_gtzan_folder_tree(tmp_path):
    for name in all_gtzan_names():
        path = tmp_path / "genres_original" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    (tmp_path / "genres_original" / "jazz" / "jazz.00054.wav").unlink()  # excluded: not needed
    (tmp_path / "genres_original" / "pop" / ".DS_Store").touch()
    splits = ds.load_dataset_splits("gtzan", tmp_path)
    assert splits.root == tmp_path / "genres_original"
    assert [splits.counts(n) for n in ds.SPLIT_NAMES] == list(GTZAN_COUNTS.values())
    assert all((splits.root / p).is_file() for _, p in splits.test)
    (tmp_path / "genres_original" / "rock" / "rock.00009.wav").unlink()
    (tmp_path / "genres_original" / "blues" / "blues.00000.wav").unlink()
    with pytest.raises(DatasetError, match=r"2 of the 918 .*blues/blues\.00000.*rock/rock\.00009"):
        ds.gtzan_splits(tmp_path)
    with pytest.raises(DatasetError, match="no GTZAN genre folders"):
        ds.gtzan_splits(tmp_path / "genres_original" / "rock")


def test_gtzan_duplicate_track():
    with pytest.raises(DatasetError, match="appears twice"):
        ds.gtzan_splits_from_names(all_gtzan_names() + ["blues/blues.00000.mp3"])


MEDLEY_CSV = """subset,instrument,instrument_id,song_id,uuid4\r
test,clarinet,0,000,0e4371ac-1c6a-51ab-fdb7-f8abd5fbf1a3\r
training,distorted electric guitar,1,139,163fd2b1-8e98-515a-f501-4742cc6d066f\r
training,violin,7,140,aaaa\r
validation,female singer,2,200,a8bfed6b-3005-5059-f46d-4f4c5e672850\r
test,tenor saxophone,5,001,bbbb\r
"""


def test_medley_csv(tmp_path):
    csv_path = tmp_path / "Medley-solos-DB_metadata.csv"
    csv_path.write_text(MEDLEY_CSV, newline="")
    splits = ds.medley_solos_splits(csv_path)
    assert splits.labels == ds.MEDLEY_SOLOS_LABELS
    assert splits.train == [
        ("distorted electric guitar", "Medley-solos-DB_training-1_163fd2b1-8e98-515a-f501-4742cc6d066f.wav"),
        ("violin", "Medley-solos-DB_training-7_aaaa.wav"),
    ]
    assert splits.label_ids("train") == [1, 7]
    assert splits.label_ids("val") == [2]
    assert splits.label_ids("test") == [0, 5]
    assert splits.val[0][1] == "Medley-solos-DB_validation-2_a8bfed6b-3005-5059-f46d-4f4c5e672850.wav"
    assert splits.counts("test") == [1, 0, 0, 0, 0, 1, 0, 0]


def test_medley_files_checked_and_errors(tmp_path):
    csv_path = tmp_path / "Medley-solos-DB_metadata.csv"
    csv_path.write_text(MEDLEY_CSV, newline="")
    audio = tmp_path / "Medley-solos-DB"
    audio.mkdir()
    for _, name in [i for n in ds.SPLIT_NAMES for i in ds.medley_solos_splits(csv_path).split(n)]:
        (audio / name).touch()
    splits = ds.load_dataset_splits("medley-solos-db", tmp_path)  # finds the CSV and the sub-folder
    assert splits.test[1] == ("tenor saxophone", "Medley-solos-DB/Medley-solos-DB_test-5_bbbb.wav")
    (audio / "Medley-solos-DB_training-7_aaaa.wav").unlink()
    with pytest.raises(DatasetError, match="1 file.*training-7_aaaa"):
        ds.load_dataset_splits("medley", tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("subset,instrument,instrument_id,song_id,uuid4\ntraining,piano,7,1,x\n")
    with pytest.raises(DatasetError, match=r"bad\.csv:2: instrument 'piano' does not match"):
        ds.medley_solos_splits(bad)
    bad.write_text("subset,instrument,instrument_id,song_id,uuid4\ntrain,piano,4,1,x\n")
    with pytest.raises(DatasetError, match="unknown subset 'train'"):
        ds.medley_solos_splits(bad)
    bad.write_text("subset,instrument,uuid4\n")
    with pytest.raises(DatasetError, match="missing column"):
        ds.medley_solos_splits(bad)


def test_tsv_round_trip_and_export(tmp_path):
    splits = ds.gtzan_splits_from_names(all_gtzan_names())
    paths = ds.export_splits(splits, tmp_path / "out")
    assert sorted(p.name for p in paths.values()) == ["labels.txt", "test.tsv", "train.tsv", "val.tsv"]
    assert (tmp_path / "out" / "labels.txt").read_text().splitlines() == list(ds.GTZAN_GENRES)
    first = (tmp_path / "out" / "train.tsv").read_text().splitlines()[0]
    assert first == "blues\tblues/blues.00000.wav"
    again = ds.load_dataset_splits("tsv", tmp_path / "out")
    assert again.labels == splits.labels
    for name in ds.SPLIT_NAMES:
        assert again.split(name) == splits.split(name)
    assert ds.read_tsv(paths["val"], splits.labels) == splits.val


def test_tsv_crlf_aliases_and_unknown_label(tmp_path):
    path = tmp_path / "groundtruth_train.tsv"
    path.write_bytes(b"blu\tblues/blues.00000.npy\r\n\r\nroc\trock/rock.00003.npy\r\n")
    assert ds.read_tsv(path) == [("blu", "blues/blues.00000.npy"), ("roc", "rock/rock.00003.npy")]
    items = ds.read_tsv(path, ds.GTZAN_GENRES, aliases=ds.label_aliases("gtzan"))
    assert items == [("blues", "blues/blues.00000.npy"), ("rock", "rock/rock.00003.npy")]
    with pytest.raises(DatasetError, match=r"groundtruth_train\.tsv:3: unknown label 'roc'"):
        ds.read_tsv(path, ["blu", "cla"])
    path.write_text("blu blues/blues.00000.npy\n")
    with pytest.raises(DatasetError, match=r":1: expected 'label<TAB>relative/path'"):
        ds.read_tsv(path)
    with pytest.raises(DatasetError, match="contains a tab"):
        ds.write_tsv([("a\tb", "x.wav")], tmp_path / "x.tsv")


def test_tsv_label_order_and_holdout(tmp_path):
    rows = [(label, f"{label}/{i}.wav") for label in ("zeta", "alpha") for i in range(20)]
    ds.write_tsv(rows, tmp_path / "train.tsv")
    splits = ds.tsv_splits(tmp_path, seed=1)
    assert splits.labels == ("alpha", "zeta")  # sorted when nothing gives an order
    assert (len(splits.train), len(splits.val), len(splits.test)) == (28, 6, 6)
    assert splits.counts("val") == [3, 3] and splits.counts("test") == [3, 3]
    (tmp_path / "labels.txt").write_text("zeta\nalpha\n")
    assert ds.tsv_splits(tmp_path).labels == ("zeta", "alpha")  # given order, never re-sorted
    assert ds.tsv_splits(tmp_path, labels=["zeta", "alpha", "beta"]).labels[2] == "beta"
    with pytest.raises(DatasetError, match="unknown label 'alpha'"):
        ds.tsv_splits(tmp_path, labels=["zeta"])


def make_class_tree(root, sizes):
    for label, n in sizes.items():
        (root / label).mkdir(parents=True)
        for i in range(n):
            (root / label / f"{label}_{i:03d}.wav").touch()
        (root / label / "notes.txt").touch()


def test_folder_split_stratified_and_seeded(tmp_path):
    make_class_tree(tmp_path, {"piano": 40, "cello": 20, "bass": 60})
    splits = ds.load_dataset_splits("folders", tmp_path, seed=3)
    assert splits.labels == ("bass", "cello", "piano")
    assert splits.counts("train") == [42, 14, 28]
    assert splits.counts("val") == [9, 3, 6]
    assert splits.counts("test") == [9, 3, 6]
    every = sorted(i for n in ds.SPLIT_NAMES for i in splits.split(n))
    assert len(every) == 120 and len(set(every)) == 120
    assert all(p.endswith(".wav") for _, p in every)
    same = ds.folder_splits(tmp_path, seed=3)
    assert [same.split(n) for n in ds.SPLIT_NAMES] == [splits.split(n) for n in ds.SPLIT_NAMES]
    other = ds.folder_splits(tmp_path, seed=4)
    assert other.test != splits.test and other.counts("test") == splits.counts("test")
    custom = ds.folder_splits(tmp_path, labels=["piano", "bass"], fractions=(0.5, 0.25, 0.25))
    assert custom.labels == ("piano", "bass") and custom.counts("test") == [10, 15]


def test_folder_and_kind_errors(tmp_path):
    make_class_tree(tmp_path, {"a": 10, "b": 1})
    with pytest.raises(DatasetError, match="stratified"):
        ds.folder_splits(tmp_path)
    with pytest.raises(DatasetError, match="class folder not found"):
        ds.folder_splits(tmp_path, labels=["a", "c"])
    with pytest.raises(ConfigError, match="fractions"):
        ds.folder_splits(tmp_path, fractions=(0.8, 0.3, 0.1))
    with pytest.raises(ConfigError, match="unknown dataset kind"):
        ds.load_dataset_splits("mnist", tmp_path)
    with pytest.raises(ConfigError, match="bad option"):
        ds.load_dataset_splits("folders", tmp_path, metadata="x.csv")
    with pytest.raises(DatasetError, match="not one of"):
        ds.DatasetSplits(("a",), [("b", "x.wav")], [], [])


def test_split_file_rules_name_file_and_line(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("\ufefflabel\tpath\n# a comment\nblu\tblues/a.wav\n\nroc\trock/b.wav\n", encoding="utf-8")
    assert split_files.read_tsv(path) == [("blu", "blues/a.wav"), ("roc", "rock/b.wav")]  # BOM, header, comment skipped
    path.write_text("blu\tblues/a.wav\textra\n")
    with pytest.raises(DatasetError, match=r"train\.tsv:1: expected 'label<TAB>relative/path'"):
        split_files.read_tsv(path)
    path.write_text("blu\tx.wav\nblu\tx.wav\nroc\tx.wav\n")
    with pytest.raises(DatasetError, match=r"train\.tsv:3: x\.wav is labelled 'roc', but 'blu' on line 1"):
        split_files.read_tsv(path)
    (tmp_path / "empty.tsv").write_text("")
    assert split_files.read_tsv(tmp_path / "empty.tsv") == []


def test_labels_file_and_label_lists(tmp_path):
    path = tmp_path / "labels.txt"
    split_files.write_labels(path, ["b", "a"])
    assert path.read_text() == "b\na\n" and split_files.read_labels(path) == ["b", "a"] == split_files.parse_labels(
        path
    )
    path.write_text("a\n\nb\na\n")
    with pytest.raises(DatasetError, match=r"labels\.txt:4: label 'a' repeated \(first on line 1\)"):
        split_files.read_labels(path)
    assert split_files.parse_labels(" a, b ,c") == ["a", "b", "c"] == split_files.parse_labels(["a", "b", "c"])
    with pytest.raises(ConfigError, match="repeated"):
        split_files.parse_labels("a,a")
    with pytest.raises(ConfigError, match="no labels"):
        split_files.parse_labels(" , ")
    with pytest.raises(DatasetError, match="contains a tab"):
        split_files.write_labels(path, ["a\tb"])
    assert path.read_text() == "a\n\nb\na\n"  # a refused write leaves the old file
