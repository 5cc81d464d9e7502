"""Label tables whose spelling used to change the science silently: numeric spellings of one
value made separate classes (0, 1, 0.0, 1.0 trained a 4-class model), missing-value spellings
became classes, and a run row that contradicts its subject's row was accepted."""
import pytest

from neuromamba.data.labels import load_label_table


def _table(tmp_path, text, **kwargs):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return load_label_table(path, "CSV", target_column="y", **kwargs)


def test_numeric_spellings_of_one_value_are_one_class(tmp_path):
    table = _table(tmp_path, "subject,y\na,0\nb,1\nc,0.0\nd,1.0\ne,01\n")
    assert table.class_names == ["0", "1"]
    assert table.targets == {("a", None): 0, ("b", None): 1, ("c", None): 0, ("d", None): 1,
                             ("e", None): 1}


@pytest.mark.parametrize("missing", ["NULL", "-", "?", "NA", "n/a", "", "None", "."])
def test_missing_value_spellings_are_missing_not_a_class(tmp_path, missing):
    table = _table(tmp_path, f"subject,y\na,ctrl\nb,case\nc,{missing}\n")
    assert table.class_names == ["case", "ctrl"] and ("c", None) not in table.targets
    regression = _table(tmp_path, f"subject,y\na,1.5\nb,2\nc,{missing}\n",
                        task_type="regression")
    assert regression.targets == {("a", None): 1.5, ("b", None): 2.0}


def test_a_run_row_contradicting_its_subjects_row_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"lines 2 and 3: subject 'a' has 'y' 'rest' for all its "
                                         r"runs and 'task' for run 'run1'"):
        _table(tmp_path, "subject,run,y\na,,rest\na,run1,task\nb,,task\n")
    agreeing = _table(tmp_path, "subject,run,y\na,,rest\na,run1,rest\nb,,task\n")
    assert agreeing.targets[("a", "run1")] == agreeing.targets[("a", None)]


def test_the_class_list_is_printed_at_start_with_its_subjects(tmp_path):
    """A training names its classes in index order, with the subjects of each per split, so a
    table spelled 0/1/0.0/1.0 shows two classes before any training (not four)."""
    import csv
    from pathlib import Path

    from neuromamba.cli import parse_args, run_config_of
    from neuromamba.data.dummy import DummySpec, write_dummy_runs
    from neuromamba.training.runner import build_datamodule

    write_dummy_runs(tmp_path / "h5", DummySpec(num_subjects=12, img_size=(24, 24, 24), num_frames=8, seed=3))
    subjects = sorted(p.name for p in (tmp_path / "h5").iterdir() if p.is_dir())
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["subject", "dx"])
        for i, s in enumerate(subjects):
            writer.writerow([s, ["0", "1", "0.0", "1.0"][i % 4]])
    args = parse_args(["--dataset_name", "CSV", "--image_path", str(tmp_path / "h5"), "--label_csv",
                       str(tmp_path / "labels.csv"), "--target_column", "dx",
                       "--downstream_task_type", "classification", "--img_size", "24", "24", "24", "4",
                       "--train_split", "0.5", "--val_split", "0.25", "--output_dir", str(tmp_path)])
    dm = build_datamodule(run_config_of(args), Path(tmp_path))
    dm.setup("fit")
    line = dm.class_line()
    counts = [[len({s for s, t in zip(dm.clip_subjects(n), dm.clip_targets(n)) if t == c})
               for n in ("train", "val", "test")] for c in (0, 1)]
    assert line == (f"2 classes of column 'dx': 0=0 ({'/'.join(map(str, counts[0]))}), "
                    f"1=1 ({'/'.join(map(str, counts[1]))}) subjects in train/val/test")
    assert sum(map(sum, counts)) == 12


def test_bids_participant_id_is_the_subject_column(tmp_path):
    path = tmp_path / "participants.tsv"
    path.write_text("participant_id\tgroup\nsub-01\tcase\nsub-02\tcontrol\n")
    table = load_label_table(path, "CSV", target_column="group")
    assert table.targets == {("sub-01", None): 0, ("sub-02", None): 1}  # case, control


def test_ids_that_all_miss_show_an_id_from_each_side(tmp_path):
    """'12 of 12 excluded' named the data's ids only; the table spelled them without sub-."""
    import warnings

    from neuromamba.data.labels import report_unlabelled

    table = _table(tmp_path, "subject,y\n01,a\n02,b\n03,a\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report_unlabelled(["sub-01", "sub-02", "sub-03"], table)
    text = str(caught[0].message)
    assert text.startswith("3 of 3 subjects have no label in column 'y' and are excluded: sub-01, ")
    assert "the data's ids look like 'sub-01', the table's like '01' (a 'sub-' prefix differs" in text
