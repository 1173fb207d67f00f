"""The `pixgen` command end to end on tiny runs."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from pixgen.cli import main

TINY = ["--data", "digits", "--image-size", "16", "--batch-size", "16", "--no-progress",
        "--set", "model.hidden=[16,16]", "--set", "data.num_images=64",
        "--set", "train.tensorboard=false", "--set", "train.log_every=1"]


def run_cli(*args, cwd=None):
    """Run `python -m pixgen` in a subprocess (as a user would) and capture its output."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "pixgen", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "gan-mlp", "--steps", "3", "--out", str(out), *TINY]) == 0
    return out


def test_train_writes_a_complete_run_directory(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "config.json", "model.safetensors", "state.pt",
            "metrics.jsonl", "samples"} <= names
    meta = json.loads((run_dir / "config.json").read_text())
    assert meta["model"] == "gan-mlp"
    assert meta["config"]["hidden"] == [16, 16]
    assert meta["data"]["image_size"] == 16 and meta["data"]["channels"] == 1
    assert meta["versions"]["torch"]
    steps = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_sample_to_grid_folder_and_npz(run_dir, tmp_path, capsys, monkeypatch):
    assert main(["sample", str(run_dir), "--n", "6", "--out", str(tmp_path / "g.png"),
                 "--nrow", "3"]) == 0
    grid = Image.open(tmp_path / "g.png")
    assert grid.size == (3 * 18 + 2, 2 * 18 + 2)  # 16 px tiles, 2 px padding
    assert main(["sample", str(run_dir), "--n", "4", "--out", str(tmp_path / "pngs")]) == 0
    files = sorted((tmp_path / "pngs").iterdir())
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(4)]
    assert Image.open(files[0]).size == (16, 16)
    assert main(["sample", str(run_dir), "--n", "5", "--seed", "3",
                 "--out", str(tmp_path / "s.npz")]) == 0
    arr = np.load(tmp_path / "s.npz")["images"]
    assert arr.shape == (5, 16, 16, 1) and arr.dtype == np.uint8
    # The same seed gives the same images.
    assert main(["sample", str(run_dir), "--n", "5", "--seed", "3",
                 "--out", str(tmp_path / "t.npz")]) == 0
    assert np.array_equal(arr, np.load(tmp_path / "t.npz")["images"])
    # a folder is written batch by batch: the same images; an interrupted run leaves nothing
    assert main(["sample", str(run_dir), "--n", "5", "--seed", "3", "--batch-size", "2",
                 "--out", str(tmp_path / "b.npz")]) == 0
    assert main(["sample", str(run_dir), "--n", "5", "--seed", "3", "--batch-size", "2",
                 "--out", str(tmp_path / "streamed")]) == 0
    streamed = [np.array(Image.open(tmp_path / "streamed" / f"{i:06d}.png")) for i in range(5)]
    assert np.array_equal(np.stack(streamed)[..., None], np.load(tmp_path / "b.npz")["images"])
    import pixgen.utils.images as images_module

    calls, real_save = [], images_module.save_image

    def stopped(*a, **kw):
        calls.append(a)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_save(*a, **kw)

    monkeypatch.setattr(images_module, "save_image", stopped)
    before = set(tmp_path.iterdir())
    assert main(["sample", str(run_dir), "--n", "5", "--batch-size", "2",
                 "--out", str(tmp_path / "cut")]) == 130
    assert len(calls) == 3 and set(tmp_path.iterdir()) == before


def test_info_models_and_datasets(run_dir, capsys):
    assert main(["info", str(run_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == "gan-mlp" and info["training"]["steps"] == 3
    assert info["parameters"] > 0
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("gan-mlp", "dcgan", "vae"))
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("shapes", "digits", "mnist", "fashion-mnist",
                                        "cifar10", "folder"))


def test_resume_from_the_cli(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    assert main(["train", "gan-mlp", "--out", str(copy), "--resume", "--steps", "5",
                 "--no-progress"]) == 0
    assert json.loads((copy / "config.json").read_text())["training"]["steps"] == 5


@pytest.mark.parametrize("args, message", [
    (["train", "dcgn"], "unknown model 'dcgn' (did you mean 'dcgan'?)"),
    (["train", "dcgan", "--data", "digts"], "unknown dataset 'digts' (did you mean 'digits'?)"),
    (["train", "dcgan", "--set", "train.lrr=1"], "unknown key 'train.lrr' (did you mean "
                                                  "'train.lr'?)"),
    (["train", "dcgan", "--set", "model.widht=3"], "has no argument 'widht' (did you mean "
                                                   "'width'?)"),
    (["train", "dcgan", "--set", "train.steps=many"], "train.steps must be a whole number"),
    (["train", "dcgan", "--set", "nokey"], "--set expects key=value"),
    (["train", "dcgan", "--data", "folder:/no/such/folder"], "/no/such/folder"),
    (["sample", "/no/such/run"], "/no/such/run does not exist"),
    (["sample", "."], "has no model.safetensors"),
])
def test_bad_input_gives_one_line_and_exit_2(args, message, tmp_path, capsys, monkeypatch):
    # in this process (a real one: tests/reliability/test_flags.py and the first case here)
    monkeypatch.chdir(tmp_path)
    if args[1] == "dcgn":
        result = run_cli(*args, cwd=tmp_path)
        code, err = result.returncode, result.stderr
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning would be a second line in a process
            code = main(args)
        err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pixgen: error: "), err
    assert message in lines[0]
    assert "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("--debug", "train", "dcgn", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_demo_runs_end_to_end(tmp_path):
    result = run_cli("demo", "--steps", "2", "--out", str(tmp_path / "demo"), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "demo" / "demo-grid.png").exists()
    assert "demo-grid.png" in result.stdout and "pixgen sample" in result.stdout


def test_every_command_has_help(capsys):
    import argparse

    from pixgen.cli import build_parser

    result = run_cli("train", "--help")  # the real entry point, in a process of its own
    assert result.returncode == 0 and "usage: pixgen train" in result.stdout
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert {"train", "sample", "eval", "models", "datasets", "info", "demo", "serve"} <= \
        set(sub.choices)
    for command in sub.choices:
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0 and f"usage: pixgen {command}" in capsys.readouterr().out
