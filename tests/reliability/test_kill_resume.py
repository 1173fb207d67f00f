"""Killed or stopped training loses nothing and resumes to bitwise identical weights."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

ARGS = ["train", "dcgan", "--data", "digits", "--image-size", "16", "--batch-size", "16",
        "--no-progress", "--set", "model.width=8", "--set", "model.z_dim=8",
        "--set", "data.num_images=64", "--set", "train.tensorboard=false",
        "--set", "train.sample_every=0", "--set", "train.ema_halflife_kimg=0.1",
        "--set", "data.hflip=true"]
STEPS = 60


def pixgen(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "pixgen", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kw)


def saved_step(run):
    try:
        return torch.load(run / "state.pt", weights_only=True)["step"]
    except Exception:
        return -1


def wait_for_checkpoint(proc, run, min_step, timeout=120):
    t0 = time.time()
    while saved_step(run) < min_step:
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, "no checkpoint appeared"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    proc = pixgen(*ARGS, "--steps", str(STEPS), "--out", str(out))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return (out / "model.safetensors").read_bytes()


def logged_step(run):
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (OSError, ValueError, KeyError):
        return 0


def test_three_sigkills_at_random_steps_then_resume_is_bitwise_identical(reference, tmp_path):
    """SIGKILL lands wherever the process is (mid-step, mid-checkpoint-write); after each,
    --resume continues from the last complete checkpoint, and the end is bitwise the same."""
    run = tmp_path / "run"
    kill_at = sorted(random.Random(1234).sample(range(6, STEPS - 5), 3))
    common = ["--out", str(run), "--set", "train.ckpt_every=3", "--set", "train.log_every=1"]
    proc = pixgen(*ARGS, *common, "--steps", str(STEPS))
    for k in kill_at:
        t0 = time.time()
        while logged_step(run) < k:  # the first step at or past k: then kill at once
            assert proc.poll() is None, proc.communicate()
            assert time.time() - t0 < 120, f"step {k} never came"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert saved_step(run) < STEPS
        proc = pixgen("train", "dcgan", *common, "--resume", "--no-progress")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert (run / "model.safetensors").read_bytes() == reference
    assert not list(run.glob(".*.tmp")), "temporary files were left behind"
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1)), "the metrics log repeats or misses steps"


def test_sigterm_saves_exits_143_and_says_how_to_resume(reference, tmp_path):
    run = tmp_path / "run"
    proc = pixgen(*ARGS, "--out", str(run), "--steps", str(STEPS), "--set",
                  "train.ckpt_every=5")
    wait_for_checkpoint(proc, run, 5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    # not 0: `pixgen train ... && pixgen eval ...` must not go on with a half-trained run
    assert proc.returncode == 128 + signal.SIGTERM, err
    stopped_at = saved_step(run)
    assert stopped_at < STEPS
    assert f"stopped at step {stopped_at}" in out and "--resume" in out
    assert "trained dcgan" not in out
    proc = pixgen("train", "dcgan", "--out", str(run), "--resume", "--no-progress")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert (run / "model.safetensors").read_bytes() == reference
