"""Hardening: checkpoints that try to run code, tampered weights and tampered configs are all
refused with a CheckpointError (exit status 2 at the command line), nothing is unpickled
with pickle's full power, and nothing absurd is allocated."""

from __future__ import annotations

import json
import pickle
import resource
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import pixgen
from pixgen.cli import main
from pixgen.errors import CheckpointError
from pixgen.train import checkpoint as ckpt

TINY = ["--data", "digits", "--image-size", "8", "--batch-size", "8", "--no-progress",
        "--set", "model.hidden=[8]", "--set", "data.num_images=16",
        "--set", "train.tensorboard=false", "--set", "train.sample_every=0"]


class WritesMarker:
    """Unpickling this creates the file ``path``: code execution, if it ever happens."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("malicious") / "run"
    assert main(["train", "gan-mlp", "--steps", "1", "--out", str(run), *TINY]) == 0
    return run


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def refused_by_cli(capsys, *argv: str) -> str:
    """Run the command; it must fail with exit status 2 and one line; return that line."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pixgen: error: "), err
    return err[0]


# -- state.pt that would run code ---------------------------------------------------------
@pytest.mark.parametrize("how", ["torch.save", "pickle", "pickle-4"])
def test_state_that_runs_code_is_refused_by_resume_and_load_state(run, tmp_path, capsys, how):
    marker = tmp_path / "PWNED"
    payload = {"step": 1, "model": {}, "evil": WritesMarker(marker)}
    if how == "torch.save":
        torch.save(payload, run / "state.pt")
    else:
        # protocol 4 (Python's default) also drew torch's "Detected pickle protocol" warning,
        # a second line before the error
        protocol = 4 if how == "pickle-4" else 2
        (run / "state.pt").write_bytes(pickle.dumps(payload, protocol=protocol))
    with pytest.raises(CheckpointError, match="could run code"):
        ckpt.load_state(run / "state.pt")
    line = refused_by_cli(capsys, "train", "gan-mlp", "--out", str(run), "--resume",
                          "--steps", "2", "--no-progress")
    assert f"refused to load {run / 'state.pt'}" in line and "could run code" in line
    assert not marker.exists()
    assert json.loads((run / "config.json").read_text())["training"]["steps"] == 1


@pytest.mark.parametrize("name", ["evil.pt", "model.pkl", "evil.safetensors"])
def test_a_pickle_where_a_run_is_expected_is_never_unpickled(tmp_path, capsys, name):
    marker = tmp_path / "PWNED"
    evil = tmp_path / name
    torch.save({"x": WritesMarker(marker)}, evil)
    with pytest.raises(CheckpointError):
        pixgen.load(evil)
    refused_by_cli(capsys, "sample", str(evil), "--out", str(tmp_path / "g.png"))
    refused_by_cli(capsys, "info", str(evil))
    assert not marker.exists()


def test_a_pickle_as_model_safetensors_is_never_unpickled(run, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    torch.save({"x": WritesMarker(marker)}, run / "model.safetensors")
    line = refused_by_cli(capsys, "sample", str(run), "--out", str(tmp_path / "g.png"))
    assert "is not a readable safetensors file" in line
    assert not marker.exists()


# -- tampered model.safetensors ---------------------------------------------------------
def tamper_header_length(weights: Path, length: int) -> None:
    data = weights.read_bytes()
    weights.write_bytes(struct.pack("<Q", length) + data[8:])


@pytest.mark.parametrize("tamper, message", [
    (lambda w: w.write_bytes(w.read_bytes()[: len(w.read_bytes()) // 2]), "corrupt or truncated"),
    (lambda w: w.write_bytes(w.read_bytes()[:5]), "it is only 5 bytes long"),
    (lambda w: w.write_bytes(b""), "it is only 0 bytes long"),
    (lambda w: tamper_header_length(w, 2**40), "its header claims 1,099,511,627,776 bytes"),
    (lambda w: tamper_header_length(w, 2**64 - 1), "its header claims"),
    (lambda w: tamper_header_length(w, w.stat().st_size), "its header claims"),
    (lambda w: tamper_header_length(w, 3), "corrupt or truncated"),
    (lambda w: w.write_bytes(struct.pack("<Q", 8) + b"not json"), "corrupt or truncated"),
    (lambda w: w.write_bytes(struct.pack("<Q", 60) + json.dumps(
        {"x": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4]}})
        .encode().ljust(60)), "corrupt or truncated"),
    (lambda w: save_file({k: torch.zeros(3, 3) for k in ckpt.load_file(w)}, w), "wrong shape"),
    (lambda w: save_file({"a": torch.zeros(1)}, w), "missing"),
    (lambda w: save_file({**ckpt.load_file(w), "extra": torch.zeros(1)}, w), "unexpected"),
    (lambda w: save_file({k: v.to(torch.int32) for k, v in ckpt.load_file(w).items()}, w),
     "wrong dtype"),
])
def test_tampered_weights_are_refused(run, tmp_path, capsys, tamper, message):
    weights = run / "model.safetensors"
    tamper(weights)
    with pytest.raises(CheckpointError, match=message):
        pixgen.load(run)
    line = refused_by_cli(capsys, "sample", str(run), "--out", str(tmp_path / "g.png"))
    assert str(weights) in line and message in line


# -- tampered config.json -----------------------------------------------------------------
def edit_config(run: Path, edit) -> None:
    meta = json.loads((run / "config.json").read_text())
    edit(meta)
    (run / "config.json").write_text(json.dumps(meta))


ABSURD = [  # (config edit, what the message says)
    (lambda m: m.update(model="evil-model"), "unknown model 'evil-model'"),
    (lambda m: m.update(model=["gan-mlp"]), "does not describe a pixgen model"),
    (lambda m: m.update(config="width=8"), "does not describe a pixgen model"),
    (lambda m: m["config"].update(hidden="wide"), "model.hidden must be a list"),
    (lambda m: m["config"].update(z_dim="many"), "model.z_dim must be a whole number"),
    (lambda m: m["config"].update(image_size=8.5), "must be a whole number"),
    (lambda m: m["config"].update(spectral_norm="maybe"), "must be true or false"),
    (lambda m: m["config"].update(channels=-3), "channels=-3 is out of range; use 1 to 4"),
    (lambda m: m["config"].update(channels=0), "channels=0 is out of range"),
    (lambda m: m["config"].update(image_size=10**9), "image_size=1000000000 is out of range"),
    (lambda m: m["config"].update(z_dim=10**15), "z_dim=1000000000000000 is out of range"),
    (lambda m: m["config"].update(hidden=[10**7]), "hidden=10000000 is out of range"),
    (lambda m: m["config"].update(hidden=[8] * 100_000), "hidden has 100000 entries"),
    (lambda m: m["config"].update(hidden=[[8]]), "must be a whole number"),
    # every number in range, but together 3.4e10 parameters (137 GB): refused, unallocated
    (lambda m: m["config"].update(hidden=[65536, 65536, 65536, 65536, 65536, 65536, 65536,
                                          65536]), "would allocate over"),
    (lambda m: m["config"].update(r1_gamma=float("nan")), "r1_gamma must be a finite number"),
    (lambda m: m["config"].update(r1_gamma=float("inf")), "r1_gamma must be a finite number"),
    (lambda m: m["config"].update(loss="evil"), "unknown GAN loss 'evil'"),
    (lambda m: m["config"].update(bogus=1), "has no argument 'bogus'"),
    (lambda m: m.update(format_version=99), "format_version 99"),
    (lambda m: m.update(data="digits"), "'data' must be a mapping"),
    (lambda m: m["data"].update(image_size="big"), "data.image_size must be int"),
    (lambda m: m["data"].update(class_names=[1, 2]), "data.class_names must be a list of str"),
    (lambda m: m["training"].update(seconds="long"), "training.seconds must be a number"),
]


@pytest.mark.parametrize("edit, message", ABSURD)
def test_tampered_config_is_refused_through_load_and_the_cli(run, tmp_path, capsys, edit,
                                                             message):
    edit_config(run, edit)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError) as e:
        pixgen.load(run)
    assert message in str(e.value) and str(run / "config.json") in str(e.value)
    for argv in (["sample", str(run), "--out", str(tmp_path / "g.png")], ["info", str(run)]):
        assert message in refused_by_cli(capsys, *argv)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 500, f"peak memory grew by {grown_mb:.0f} MB"


def test_config_that_is_not_json_or_nests_too_deep(run, capsys):
    (run / "config.json").write_bytes(b"\xff\xfe not utf-8")
    assert "is not valid JSON" in refused_by_cli(capsys, "info", str(run))
    (run / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    line = refused_by_cli(capsys, "info", str(run))
    assert "config.json" in line
    (run / "config.json").unlink()
    (run / "config.json").mkdir()
    assert "config.json" in refused_by_cli(capsys, "info", str(run))


def test_unknown_data_entries_are_dropped_not_crashed_on(run, capsys):
    edit_config(run, lambda m: m["data"].update(evil=True))
    model = pixgen.load(run)
    assert "evil" not in model.meta["data"] and model.meta["data"]["image_size"] == 8
    assert main(["info", str(run)]) == 0


def test_an_untampered_run_still_loads_after_all_this(run, tmp_path):
    model = pixgen.load(run)
    assert model.sample(2).shape == (2, 1, 8, 8)
