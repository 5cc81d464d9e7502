"""Values from --recipe and --config files: typed as on the command line, or refused by file and
key. A quoted "false" is a non-empty string, which Python reads as on: it used to freeze the
backbone while the start line printed false."""
import pytest

from neuromamba.cli import parse_args


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("flag", ["--recipe", "--config"])
@pytest.mark.parametrize("text, message", [
    ('freeze_feature_extractor: "false"\n', r"freeze_feature_extractor: 'false' is not true or false"),
    ('pretraining: "no"\n', r"pretraining: 'no' is not true or false"),
    ("prompt_tuning: 1\n", r"prompt_tuning: 1 is not true or false"),
    ("learning_rate: abc\n", r"learning_rate: 'abc' is not a valid value"),
    ("max_epochs: 2.5\n", r"max_epochs: 2.5 is not an integer"),
    ("max_epochs: true\n", r"max_epochs: True is not an integer"),
    ("img_size: 24\n", r"img_size: 24 must be a list"),
])
def test_a_value_of_the_wrong_type_is_refused_naming_the_file_and_key(tmp_path, flag, text, message):
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(ValueError, match=rf"{flag} .*bad\.yaml: {message}"):
        parse_args(["--downstream_task", "sex", flag, path])


def test_values_of_the_right_type_are_read_as_the_command_line_reads_them(tmp_path):
    path = _write(tmp_path, "ok.yaml", "max_epochs: 3\nlearning_rate: 1e-3\nno_progress_bar: true\n"
                                       "freeze_feature_extractor: false\nimg_size: [24, 24, 24, '4']\n")
    for flag in ("--recipe", "--config"):
        args = parse_args(["--downstream_task", "sex", flag, path])
        assert args.max_epochs == 3 and args.learning_rate == pytest.approx(1e-3)
        assert isinstance(args.learning_rate, float)  # PyYAML reads 1e-3 as a string
        assert args.no_progress_bar is True and args.freeze_feature_extractor is False
        assert list(args.img_size) == [24, 24, 24, 4]


def test_a_recipe_path_is_checked_as_a_path(tmp_path):
    text = _write(tmp_path, "ok.txt", "max_epochs: 3\n")
    with pytest.raises(ValueError, match=r"--recipe .*ok\.txt: a recipe file must end in \.yaml or \.yml"):
        parse_args(["--downstream_task", "sex", "--recipe", text])
    with pytest.raises(FileNotFoundError, match=r"--recipe .*missing\.yaml: no such file"):
        parse_args(["--downstream_task", "sex", "--recipe", str(tmp_path / "missing.yaml")])
    with pytest.raises(ValueError, match=r"--recipe 'nosuch' is not one of \['paper', 'tuned'\]"):
        parse_args(["--downstream_task", "sex", "--recipe", "nosuch"])
