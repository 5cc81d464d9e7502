"""CPU tests of the GPU suite (benchmarks/gpu_suite, benchmarks/gpu_suite.sh): flags, the
results writer, a dry-run of the parity/throughput/memory/MFU sections on tiny shapes, the
main.py commands of the training section, and the shell script's pure-bash parts."""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

from gpu_suite import cli, env, training_run  # noqa: E402
from gpu_suite.results import (COLUMNS, ResultSink, Row, checked, csv_text, json_text,  # noqa: E402
                               markdown_table)
from gpu_suite.settings import LayerConfig, ModelDims, dry_run_settings, with_overrides  # noqa: E402

SCRIPT = REPO / "benchmarks" / "gpu_suite.sh"


# ------------------------------------------------------------------------------------ flags
def test_parse_args_defaults_run_every_section_in_order(tmp_path):
    args = cli.parse_args(["--out", str(tmp_path)])
    assert args.sections == ("parity", "throughput", "memory", "training", "mfu")
    assert not args.dry_run and args.peak_tflops is None and args.out == str(tmp_path)


def test_parse_args_keeps_the_suite_order_and_parses_lists():
    args = cli.parse_args(["--sections", "mfu,parity", "--dry-run", "--batches", "3,1",
                           "--removals", "packed", "--steps", "4", "--peak_tflops", "500"])
    assert args.sections == ("parity", "mfu")
    assert args.dry_run and args.batches == (3, 1) and args.removals == ("packed",)
    assert args.steps == 4 and args.peak_tflops == 500.0
    settings = cli.settings_for(args)
    assert settings.label == "dry-run"
    assert settings.throughput_batches == (3, 1) and settings.timed_steps == 4
    assert settings.removals == ("packed",)
    assert settings.warmup_steps == dry_run_settings().warmup_steps  # not overridden


@pytest.mark.parametrize("argv, message", [
    (["--sections", "parity,bogus"], "unknown ['bogus']"),
    (["--removals", "none,everything"], "unknown ['everything']"),
    (["--warmup", "-1"], "--warmup must be >= 0"),
])
def test_parse_args_rejects_bad_values_with_a_sentence(argv, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        cli.parse_args(argv)


@pytest.mark.parametrize("argv", [["--batches", "1,x"], ["--batches", "0"], ["--peak_tflops", "-3"],
                                  ["--steps", "1,2"]])
def test_argparse_level_errors_exit(argv):
    with pytest.raises(SystemExit):
        cli.parse_args(argv)


def test_main_returns_2_for_bad_flags(capsys):
    assert cli.main(["--sections", "nope"]) == 2
    assert "gpu_suite: error: --sections" in capsys.readouterr().err


def test_full_run_without_cuda_is_refused_with_a_hint(tmp_path):
    if env.torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="--dry-run"):
        cli.build_context(cli.parse_args(["--out", str(tmp_path)]))


def test_peak_tflops_by_device_name():
    assert env.peak_tflops_for("NVIDIA H100 80GB HBM3") == 989.0
    assert env.peak_tflops_for("NVIDIA H100 PCIe") == 756.0
    assert env.peak_tflops_for("NVIDIA H200") == 989.0
    assert env.peak_tflops_for("Tesla T4") is None


# ------------------------------------------------------------------------------- writer
ROWS = [
    Row(section="parity", case="base plain", metric="rel err output", value=1.23456e-4, unit="rel",
        backend="fused", precision="fp32", batch=2, limit="<= 0.001", status="pass", note="worst: a|b"),
    Row(section="memory", case="base", metric="peak allocated", unit="GiB", backend="fused",
        precision="bf16", batch=3, limit="<= 24 GiB", status="skipped", note="skipped: no CUDA"),
    Row(section="throughput", case="x", metric="tokens/s", value=12345.678, unit="tokens/s",
        status="ok", note="line one\nline two " + "z" * 200),
    Row(section="mfu", case="y", metric="MFU", value=float("nan"), status="error", note="boom"),
]


def test_markdown_table_exact():
    expected = (
        "| section | case | backend | precision | batch | metric | value | unit | limit | status | note |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
        "| parity | base plain | fused | fp32 | 2 | rel err output | 1.235e-04 | rel | <= 0.001 | pass | worst: a\\|b |\n"
        "| memory | base | fused | bf16 | 3 | peak allocated |  | GiB | <= 24 GiB | skipped | skipped: no CUDA |\n"
        "| throughput | x |  |  |  | tokens/s | 1.235e+04 | tokens/s |  | ok | line one line two "
        + "z" * (160 - 3 - len("line one\nline two ")) + "... |\n"
        "| mfu | y |  |  |  | MFU | nan |  |  | error | boom |\n"
    )
    assert markdown_table(ROWS) == expected


def test_csv_text_exact_full_precision_and_full_notes():
    text = csv_text(ROWS)
    lines = text.splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert lines[1] == "parity,base plain,fused,fp32,2,rel err output,0.000123456,rel,<= 0.001,pass,worst: a|b"
    assert lines[2] == "memory,base,fused,bf16,3,peak allocated,,GiB,<= 24 GiB,skipped,skipped: no CUDA"
    parsed = list(csv.DictReader(text.splitlines(keepends=True)))
    assert parsed[2]["note"] == "line one\nline two " + "z" * 200
    assert float(parsed[2]["value"]) == 12345.678
    assert parsed[3]["value"] == "nan"


def test_json_text_turns_nan_into_null_and_keeps_extra():
    rows = [Row(section="s", case="c", metric="m", value=float("nan"), extra={"t": [1.5, float("inf")]})]
    data = json.loads(json_text(rows, {"device": "cpu"}))
    assert data["meta"] == {"device": "cpu"}
    assert data["rows"][0]["value"] is None
    assert data["rows"][0]["extra"] == {"t": [1.5, "inf"]}
    assert set(data["rows"][0]) == set(COLUMNS) | {"extra"}


def test_result_sink_rewrites_all_three_files_after_every_row(tmp_path):
    sink = ResultSink(str(tmp_path), {"device": "test"})
    sink.add(ROWS[0])
    assert json.loads((tmp_path / "results.json").read_text())["rows"][0]["value"] == 1.23456e-4
    sink.add(ROWS[1])
    md = (tmp_path / "results.md").read_text()
    assert "- device: test" in md and "- rows: 1 pass, 1 skipped" in md and markdown_table(ROWS[:2]) in md
    assert (tmp_path / "results.csv").read_text() == csv_text(ROWS[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "results.json", "results.md"]


def test_merge_joins_several_calls_results(tmp_path, capsys):
    for name, rows in (("a", ROWS[:2]), ("b", ROWS[2:])):
        sink = ResultSink(str(tmp_path / name), {"device": name})
        for row in rows:
            sink.add(row)
    paths = [str(tmp_path / "a" / "results.json"), str(tmp_path / "b" / "results.json")]
    assert cli.main(["--merge", *paths, "--out", str(tmp_path / "all")]) == 0
    merged = json.loads((tmp_path / "all" / "results.json").read_text())
    assert [r["section"] for r in merged["rows"]] == ["parity", "memory", "throughput", "mfu"]
    assert merged["meta"]["part 2"].startswith(paths[1] + ": device=b")
    assert (tmp_path / "all" / "results.csv").read_text().splitlines()[1:3] == csv_text(ROWS).splitlines()[1:3]
    assert "merged 4 rows from 2 file(s)" in capsys.readouterr().out
    assert cli.main(["--merge", str(tmp_path / "missing.json")]) == 2


def test_row_status_is_validated_and_checked_handles_nan():
    with pytest.raises(ValueError, match="status"):
        Row(section="s", case="c", metric="m", status="great")
    assert checked(0.5, 1.0) == "pass" and checked(1.5, 1.0) == "fail"
    assert checked(float("nan"), 1.0) == "fail" and checked(None, 1.0) == "fail"
    assert checked(2.0, 1.0, below=False) == "pass"


# ------------------------------------------------------------------------------- dry-run
def tiny_settings():
    return with_overrides(
        dry_run_settings(),
        parity_layers=(LayerConfig("tiny", 32, 8, 16),), parity_seqlen=40, parity_packed_lengths=(17, 23),
        parity_chunk_size=16, throughput_batches=(1, 2), removals=("none", "packed"),
        models={"base": ModelDims(16, 1, 4, 16)},
        memory_models=("base",), memory_removals=("batch",), mfu_removals=("batch",),
        warmup_steps=0, timed_steps=1)


def dry_run_context(tmp_path, settings):
    args = cli.parse_args(["--dry-run", "--out", str(tmp_path / "out"), "--work_dir", str(tmp_path / "work"),
                           "--quiet"])
    return cli.build_context(args, echo=lambda line: None, settings=settings)


def test_dry_run_parity_throughput_memory_mfu_rows(tmp_path):
    ctx = dry_run_context(tmp_path, tiny_settings())
    cli.run_sections(ctx, ["parity", "throughput", "memory", "mfu"])
    rows = ctx.sink.rows
    assert not [r for r in rows if r.status in ("error", "fail")], [r.note for r in rows if r.status == "error"]

    parity = [r for r in rows if r.section == "parity"]
    # 2 packings x 2 precisions x 3 candidates x 4 metrics; fused ones skipped without CUDA
    assert len(parity) == 48
    measured = [r for r in parity if r.backend == "pure-chunk/2"]
    assert len(measured) == 16
    assert [r.metric for r in measured[:4]] == ["rel err output", "rel err grad input",
                                                "rel err grad params (all)", "rel err grad params (max)"]
    for r in measured:  # the chunked scan must not depend on the chunk length
        assert math.isfinite(r.value) and r.value < (1e-5 if r.precision == "fp32" else 2e-2)
        unchecked = r.precision == "bf16" and r.metric == "rel err grad params (max)"
        assert r.status == ("ok" if unchecked else "pass") and (r.limit == "") == unchecked
    assert {r.case for r in parity} == {"tiny d32/N8/P16 plain L=40", "tiny d32/N8/P16 seq_idx L=40"}
    assert all(r.status == "skipped" and r.note == "skipped: no CUDA" for r in parity if r.backend != "pure-chunk/2")

    throughput = [r for r in rows if r.section == "throughput"]
    assert [(r.case.split("removal=")[1], r.backend, r.batch, r.status) for r in throughput] == [
        ("none", "fused", 1, "skipped"), ("none", "fused", 2, "skipped"),
        ("none", "pure", 1, "ok"), ("none", "pure", 2, "ok"),
        ("packed", "fused", 1, "skipped"), ("packed", "fused", 2, "skipped"),
        ("packed", "pure", 1, "ok"), ("packed", "pure", 2, "ok")]
    for r in throughput:
        if r.status == "ok":
            assert r.value > 0 and math.isfinite(r.value)
            assert r.extra["total_tokens"] == r.batch * 128  # 24^3 x 4 / (6 6 6 2)
            assert r.extra["kept_tokens"] == sum(r.extra["lengths"])
            assert math.isclose(r.value, r.extra["kept_tokens"] / sorted(r.extra["step_seconds"])[0], rel_tol=1e-9)
    packed = [r for r in throughput if r.status == "ok" and "packed" in r.case]
    assert all(r.extra["kept_tokens"] < r.extra["total_tokens"] for r in packed)  # brain mask removes tokens

    memory = [r for r in rows if r.section == "memory"]
    assert [(r.backend, r.status) for r in memory] == [("fused", "skipped"), ("pure", "pass")]
    assert 0 < memory[1].value < 24 and memory[1].batch == 3

    mfu = {r.metric: r for r in rows if r.section == "mfu"}
    assert set(mfu) == {"achieved TFLOP/s", "MFU"}
    achieved = mfu["achieved TFLOP/s"]
    assert achieved.value > 0 and achieved.extra["train_flops"]["total"] > 0
    assert math.isclose(mfu["MFU"].value, 100 * achieved.value / env.DRY_RUN_PEAK_TFLOPS)

    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(saved["rows"]) == len(rows) and saved["meta"]["mode"] == "dry-run"
    assert len(list(csv.DictReader(open(tmp_path / "out" / "results.csv")))) == len(rows)


def test_parity_compare_reports_global_and_worst_parameter_errors():
    import torch

    from gpu_suite.parity import compare, relative_error

    assert relative_error(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 4.0])) == 0.0
    assert relative_error(torch.tensor([3.0, 4.5]), torch.tensor([3.0, 4.0])) == pytest.approx(0.1)
    reference = {"output": torch.ones(4), "grad_input": torch.ones(2),
                 "params": {"big": torch.full((99,), 1.0), "small": torch.ones(1)}}
    candidate = {"output": torch.full((4,), 1.01), "grad_input": torch.ones(2),
                 "params": {"big": torch.full((99,), 1.0), "small": torch.full((1,), 2.0)}}
    errors = compare(candidate, reference)
    assert errors["output"][0] == pytest.approx(0.01) and errors["grad input"][0] == 0.0
    assert errors["grad params (all)"][0] == pytest.approx(0.1)  # 1 / sqrt(100)
    assert errors["grad params (max)"] == (pytest.approx(1.0), "small")
    with pytest.raises(ValueError, match="parameters with gradients differ"):
        compare({**candidate, "params": {"big": torch.ones(99)}}, reference)


def test_a_failing_case_becomes_an_error_row_and_the_suite_goes_on(tmp_path):
    settings = with_overrides(tiny_settings(), memory_models=("nonexistent",))
    ctx = dry_run_context(tmp_path, settings)
    cli.run_sections(ctx, ["memory", "mfu"])
    errors = [r for r in ctx.sink.rows if r.status == "error"]
    assert len(errors) == 1 and errors[0].section == "memory" and "nonexistent" in errors[0].note
    assert any(r.section == "mfu" and r.status == "ok" for r in ctx.sink.rows)


def test_main_dry_run_exit_status_and_files(tmp_path, capsys):
    code = cli.main(["--dry-run", "--sections", "mfu", "--steps", "1", "--warmup", "0", "--quiet",
                     "--out", str(tmp_path), "--work_dir", str(tmp_path / "work")])
    assert code == 0
    out = capsys.readouterr().out
    assert "| mfu |" in out and "rows: {'pass': 0, 'fail': 0, 'ok': 4" in out
    assert {"results.md", "results.csv", "results.json"} <= {p.name for p in tmp_path.iterdir()}


# --------------------------------------------------------------------- training section
def test_training_commands_are_accepted_by_main_py_flags(tmp_path):
    from neuromamba.cli import parse_args as main_parse_args

    ctx = dry_run_context(tmp_path, dry_run_settings())
    pretrain = training_run.pretrain_command(ctx)
    assert pretrain[1].endswith(os.path.join("project", "main.py"))
    parsed = main_parse_args(pretrain[2:])
    assert parsed.pretraining and parsed.max_steps == 9 and parsed.background_removal == "batch"
    assert parsed.embed_dim == 32 and parsed.depth == 2 and list(parsed.img_size) == [24, 24, 24, 4]
    checkpoint = tmp_path / "last.ckpt"
    checkpoint.mkdir()  # a DeepSpeed checkpoint is a folder: needs --allow_pickle
    finetune = training_run.finetune_command(ctx, str(checkpoint))
    parsed = main_parse_args(finetune[2:])
    assert parsed.downstream_task == "sex" and parsed.load_model_path == str(checkpoint) and parsed.allow_pickle

    full = with_overrides(ctx.settings, **{k: getattr(cli.settings_for(cli.parse_args([])), k) for k in (
        "train_strategy", "train_precision", "train_accelerator", "train_steps", "img_size", "models")})
    ctx.settings = full
    command = training_run.pretrain_command(ctx)
    for flag, value in (("--strategy", "deepspeed_stage_1"), ("--precision", "bf16"), ("--max_steps", "50"),
                        ("--accelerator", "gpu"), ("--embed_dim", "192"), ("--depth", "12")):
        assert command[command.index(flag) + 1] == value


def test_loss_helpers(tmp_path):
    metrics = tmp_path / "metrics.csv"
    metrics.write_text("epoch,step,train/loss_step,val/loss\n0,0,4.0,\n0,1,3.0,\n0,1,,2.5\n"
                       ",2,,\n1,2,2.0,\n1,3,1.0,\n1,3,,1.5\n")
    assert training_run.step_losses(metrics) == [4.0, 3.0, 2.0, 1.0]
    assert training_run.step_losses(metrics, "val/loss") == [2.5, 1.5]
    trend = training_run.loss_trend([4.0, 3.0, 2.0, 1.0, 1.0, 0.5])
    assert trend["k"] == 1 and trend["first"] == 4.0 and trend["last"] == 0.5 and trend["ratio"] == 0.125
    with pytest.raises(ValueError, match="no 'nope' column"):
        training_run.step_losses(metrics, "nope")
    with pytest.raises(FileNotFoundError):
        training_run.step_losses(tmp_path / "missing.csv")


def test_backbone_distance_ignores_output_layer_and_positional_buffer():
    import torch

    a = {"w": torch.ones(4), "output_layer.weight": torch.zeros(3), "embedder.pos": torch.zeros(2)}
    b = {"w": torch.full((4,), 2.0), "output_layer.weight": torch.ones(3), "embedder.pos": torch.ones(2)}
    assert training_run.backbone_distance(a, b) == pytest.approx(0.5)


def test_launch_rows_and_run_folder(tmp_path):
    ctx = dry_run_context(tmp_path, dry_run_settings())
    fields = dict(section="training", backend="auto")
    ok = training_run.launch(ctx, "ok case", lambda: [sys.executable, "-c", "print('hi')"], "ok",
                             "run_ok", fields)
    assert ok == Path(ctx.work_dir) / "runs" / "run_ok"
    bad = training_run.launch(ctx, "bad case", lambda: [sys.executable, "-c", "raise SystemExit(3)"],
                              "bad", "run_bad", fields)
    assert bad is None

    def broken_command():
        raise ValueError("no checkpoint")

    assert training_run.launch(ctx, "broken case", broken_command, "broken", "run_x", fields) is None
    rows = {r.case: r for r in ctx.sink.rows}
    assert (rows["ok case"].status, rows["ok case"].value, rows["ok case"].metric) == ("pass", 0, "exit code")
    assert rows["ok case"].section == "training" and "ok.log" in rows["ok case"].note
    assert (rows["bad case"].status, rows["bad case"].value) == ("fail", 3)
    assert rows["broken case"].status == "error" and "no checkpoint" in rows["broken case"].note
    assert rows["broken case"].metric == "exit code"


# --------------------------------------------------------------------------- shell script
def test_shell_script_syntax():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def _bash(snippet: str, **env_vars) -> str:
    command = f"source {SCRIPT}; {snippet}"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=True,
                            env={**os.environ, **env_vars})
    return result.stdout


def test_nvcc_wrapper_keeps_only_the_requested_architectures(tmp_path):
    real = tmp_path / "cuda"
    (real / "bin").mkdir(parents=True)
    (real / "include").mkdir()
    (real / "bin" / "nvcc").write_text('#!/usr/bin/env bash\necho "REAL: $*"\n')
    (real / "bin" / "ptxas").write_text("#!/bin/sh\n")
    fake_python = tmp_path / "python"
    fake_python.write_text(f"#!/bin/sh\necho {real}\n")  # answers the CUDA_HOME query
    for path in (real / "bin" / "nvcc", real / "bin" / "ptxas", fake_python):
        path.chmod(0o755)
    out = _bash(
        f'PY={fake_python}; NM_SITE={tmp_path / "site"}; TORCH_CUDA_ARCH_LIST="9.0"; '
        'home=$(make_arch_filtered_cuda_home); echo "HOME=$home"; '
        '"$home/bin/nvcc" -O3 -gencode arch=compute_75,code=sm_75 -gencode arch=compute_90,code=sm_90 '
        '-gencode=arch=compute_100,code=sm_100 "a b.cu"; '
        '"$home/bin/nvcc" -gencode arch=compute_80,code=sm_80 x.cu; "$home/bin/nvcc" -V; '
        'readlink "$home/include"; readlink "$home/bin/ptxas"')
    lines = out.splitlines()
    assert lines[0] == f"HOME={tmp_path / 'site' / '.cuda_home'}"
    assert lines[1] == "REAL: -O3 -gencode arch=compute_90,code=sm_90 a b.cu"
    assert lines[2] == "REAL: x.cu -gencode arch=compute_90,code=sm_90"  # none kept: the wanted one added
    assert lines[3] == "REAL: -V"
    assert lines[4:] == [str(real / "include"), str(real / "bin" / "ptxas")]


def test_wheels_to_install_lists_missing_or_older_distributions(tmp_path):
    for name in ("nibabel-999.0-py3-none-any.whl", "numpy-1.0-py3-none-any.whl",
                 "surely_not_installed_xyz-1.0-py3-none-any.whl"):
        (tmp_path / name).write_bytes(b"")
    out = _bash(f"PY={sys.executable}; WHL_DIR={tmp_path}; wheels_to_install")
    assert out.splitlines() == [str(tmp_path / "nibabel-999.0-py3-none-any.whl"),
                                str(tmp_path / "surely_not_installed_xyz-1.0-py3-none-any.whl")]


def test_sdist_for_picks_the_newest_carried_version(tmp_path):
    for name in ("mamba_ssm-2.3.0.tar.gz", "mamba_ssm-2.3.2.post1.tar.gz", "causal_conv1d-1.7.0.tar.gz"):
        (tmp_path / name).write_bytes(b"")
    out = _bash(f"SDIST_DIR={tmp_path}; sdist_for mamba_ssm; sdist_for deepspeed; echo end")
    assert out.splitlines() == [str(tmp_path / "mamba_ssm-2.3.2.post1.tar.gz"), "end"]


def test_sections_keep_their_time_budgets(monkeypatch):
    """A section that would overrun the call's budget is not started; one that overruns its
    own is stopped; both leave a 'skipped' row and the next section still runs."""
    import time as _time
    from types import SimpleNamespace

    from gpu_suite import cli, sections

    rows = []
    ctx = SimpleNamespace(dry_run=False, log=lambda *a: None, sink=SimpleNamespace(add=rows.append))
    ran = []

    def slow(ctx):
        ran.append("slow")
        _time.sleep(5)

    def quick(ctx):
        ran.append("quick")

    monkeypatch.setattr(sections, "SECTIONS", {"slow": slow, "quick": quick, "big": quick})
    monkeypatch.setattr(sections, "BUDGETS_S", {"slow": 1, "quick": 1, "big": 100})
    started = _time.perf_counter()
    cli.run_sections(ctx, ["slow", "quick", "big"], time_budget_s=10)
    assert _time.perf_counter() - started < 4
    assert ran == ["slow", "quick"]
    notes = {r.section: (r.status, r.note) for r in rows}
    assert notes["slow"][0] == "skipped" and "ran past its 1 s budget" in notes["slow"][1]
    assert notes["big"][0] == "skipped" and "not started" in notes["big"][1]
    lines = cli.estimate_lines(["slow", "big"], 480)
    assert "slow 1 s, big 100 s" in lines[0] and "sections 101 s" in lines[1]
