"""Label tables: cohort headers, generic CSV, multi-class, per-run and per-block labels."""
import json
import warnings

import pytest

from neuromamba.data.labels import (LabelTable, find_label_csv, load_label_table,
                                    report_unlabelled, save_class_mapping)


def _csv(path, text):
    path.write_text(text.strip() + "\n")
    return path


def test_hcp_behavioural_headers(tmp_path):
    path = _csv(tmp_path / "hcp.csv", """
Subject,Release,Gender,Age,Age_in_Yrs,PMAT24_A_CR,CogTotalComp_AgeAdj
100206,S900,M,26-30,27,20,130.4
100307,Q1,F,26-30,,15,
100408,Q3,F,31-35,33,19,101.2
""")
    sex = load_label_table(path, "HCP", "sex")
    assert sex.task_type == "classification" and sex.class_names == ["F", "M"]
    assert sex.target_for("100206", "rfMRI_REST1_LR") == 1
    assert sex.target_for("100307", "any") == 0
    age = load_label_table(path, "HCP", "age", "regression")
    assert age.column == "Age_in_Yrs"
    assert age.target_for("100206", "r") == 27.0 and age.target_for("100307", "r") is None
    # the open-access age bins also work when asked for that column
    bins = load_label_table(path, "HCP", "age", "regression", target_column="Age")
    assert bins.target_for("100408", "r") == 33.0
    iq = load_label_table(path, "HCP", "intelligence", "regression")
    assert iq.column == "CogTotalComp_AgeAdj" and iq.target_for("100408", "r") == pytest.approx(101.2)


def test_simple_subject_sex_age_csv_works_for_every_cohort(tmp_path):
    path = _csv(tmp_path / "simple.csv", "subject,sex,age\na,M,20\nb,F,30\nc,M,40\n")
    for cohort in ("HCP", "ABCD", "UKB", "CSV"):
        table = load_label_table(path, cohort, "sex")
        assert table.class_names == ["F", "M"]
        assert [table.target_for(s, "r") for s in "abc"] == [1, 0, 1]


def test_ukb_field_codes(tmp_path):
    path = _csv(tmp_path / "ukb.csv", "eid,31-0.0,21003-2.0\n1000017,0,61\n1000025,1,70\n")
    sex = load_label_table(path, "UKB", "sex")
    assert sex.class_names == ["F", "M"] and sex.target_for("1000025", "r") == 1
    assert load_label_table(path, "UKB", "age", "regression").target_for("1000017", "r") == 61


def test_abcd_headers(tmp_path):
    path = _csv(tmp_path / "abcd.csv", "subjectkey,sex,interview_age\nNDAR_1,F,120\nNDAR_2,M,130\n")
    assert load_label_table(path, "ABCD", "sex").target_for("NDAR_2", "r") == 1
    assert load_label_table(path, "ABCD", "age", "regression").target_for("NDAR_1", "r") == 120


def test_generic_csv_multiclass_sorted_and_saved(tmp_path):
    path = _csv(tmp_path / "dx.csv", "participant,diagnosis\np1,SCZ\np2,HC\np3,BD\np4,HC\n")
    table = load_label_table(path, "CSV", None, "classification", subject_column="participant",
                             target_column="diagnosis")
    assert table.class_names == ["BD", "HC", "SCZ"] and table.num_classes == 3
    assert [table.target_for(s, "r") for s in ("p1", "p2", "p3")] == [2, 1, 0]
    save_class_mapping(table, tmp_path / "out" / "label_classes.json")
    saved = json.loads((tmp_path / "out" / "label_classes.json").read_text())
    assert saved == {"column": "diagnosis", "classes": {"BD": 0, "HC": 1, "SCZ": 2}}


def test_numeric_classes_sort_numerically(tmp_path):
    path = _csv(tmp_path / "c.csv", "subject,grade\na,10\nb,2\nc,1\n")
    table = load_label_table(path, "CSV", target_column="grade")
    assert table.class_names == ["1", "2", "10"]


def test_run_and_block_labels_for_task_state(tmp_path):
    path = _csv(tmp_path / "task.csv", """
subject,run,start_frame,end_frame,state
s1,rest,,,rest
s1,motor,0,10,left
s1,motor,10,20,right
""")
    table = load_label_table(path, "CSV", target_column="state")
    assert table.class_names == ["left", "rest", "right"]
    assert table.target_for("s1", "rest", 0, 5) == 1
    assert table.target_for("s1", "motor", 2, 9) == 0
    assert table.target_for("s1", "motor", 10, 19) == 2
    assert table.target_for("s1", "motor", 8, 12) is None  # straddles two blocks: left out
    assert table.target_for("s1", "other", 0, 3) is None


def test_missing_columns_are_clear_errors(tmp_path):
    path = _csv(tmp_path / "x.csv", "id,foo\na,1\n")
    with pytest.raises(ValueError, match=r"x\.csv: no subject column.*--subject_column"):
        load_label_table(path, "CSV", target_column="foo")
    with pytest.raises(ValueError, match=r"no column for --downstream_task 'sex'"):
        load_label_table(path, "CSV", "sex", subject_column="id")
    with pytest.raises(FileNotFoundError, match="--label_csv"):
        load_label_table(tmp_path / "none.csv")
    path = _csv(tmp_path / "y.csv", "subject,age\na,old\n")
    with pytest.raises(ValueError, match=r"y\.csv line 2: column 'age': cannot read 'old'"):
        load_label_table(path, "CSV", "age", "regression")


def test_unlabelled_subjects_one_warning_line(tmp_path):
    table = LabelTable("classification", {("a", None): 0, ("b", None): 1}, class_names=["F", "M"],
                       column="sex")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        missing = report_unlabelled(["a", "b"] + [f"x{i}" for i in range(7)], table)
    assert missing == [f"x{i}" for i in range(7)]
    assert len(caught) == 1
    text = str(caught[0].message)
    assert text.startswith("7 of 9 subjects have no label in column 'sex'")
    assert "x0, x1, x2, x3, x4, ..." in text and "\n" not in text


def test_find_label_csv_in_metadata(tmp_path):
    (tmp_path / "metadata").mkdir()
    (tmp_path / "img").mkdir()
    _csv(tmp_path / "metadata" / "labels.csv", "subject,sex\na,M\n")
    assert find_label_csv(tmp_path / "img").name == "labels.csv"
    with pytest.raises(ValueError, match="--label_csv is required"):
        find_label_csv(tmp_path / "img" / "deeper")
