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
