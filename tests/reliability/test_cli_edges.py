"""The command line at its edges: bad values, odd paths, damaged logs and half-finished
runs get one clear line (exit 2) or the right exit status, never a traceback."""

import json
import shutil

import pytest
import torch

import pixgen
from pixgen.cli import main
from pixgen.data.base import DataInfo
from pixgen.registry import MODELS

TINY = ["--data", "digits", "--image-size", "16", "--batch-size", "16", "--no-progress",
        "--set", "model.width=8", "--set", "model.z_dim=8", "--set", "data.num_images=64",
        "--set", "train.tensorboard=false", "--set", "train.log_every=2",
        "--set", "train.sample_every=0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("edges") / "run"
    assert main(["train", "dcgan", "--steps", "4", "--out", str(out), *TINY]) == 0
    return out


def one_error(capsys, *needles):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pixgen: error: "), err
    for needle in needles:
        assert needle in lines[0], err
    return lines[0]


def test_a_damaged_metrics_line_is_skipped(run, tmp_path, capsys, monkeypatch):
    """metrics.jsonl is appended to, so a crash or a full disk can cut its last line."""
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    with (copy / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "disc/lo')
    assert main(["info", str(copy), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["last_metrics"]["step"] == 4
    assert main(["train", "dcgan", "--out", str(copy), "--resume", "--steps", "6",
                 "--no-progress"]) == 0
    steps = [json.loads(x)["step"] for x in (copy / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]
    # resuming at or past --steps says so, and --config does not go with --resume
    assert main(["train", "--out", str(copy), "--resume", "--steps", "6",  # the run's model
                 "--no-progress"]) == 0
    assert "already at step 6" in capsys.readouterr().out
    # a new run with a run's settings (README: config.yaml repeats the run); no MODEL
    # given, and not into that run: MODEL was required, and the file's out was taken
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", str(copy / "config.yaml"), "--steps", "2"]) == 0
    assert (tmp_path / "runs" / "dcgan-digits" / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(["train", "--data", "digits"]) == 2
    one_error(capsys, "pixgen train needs the MODEL to train")
    assert main(["train", "dcgan", "--out", str(copy), "--resume", "--steps", "8",
                 "--config", str(copy / "config.yaml")]) == 2
    one_error(capsys, "--config does not go with --resume")


def test_the_model_and_the_data_must_agree_on_size_and_channels(run, tmp_path, capsys):
    assert main(["train", "dcgan", "--from", str(run), "--image-size", "32", "--steps", "1",
                 "--out", str(tmp_path / "a"), "--no-progress"]) == 2
    one_error(capsys, "was trained at image_size 16, but the data is 32",
              "give --image-size 16")
    assert main(["train", "dcgan", "--steps", "1", "--out", str(tmp_path / "b"), *TINY,
                 "--set", "model.channels=3"]) == 2
    one_error(capsys, "model.channels is 3, but the data is 1")


def test_folder_datasets_are_stored_as_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pixgen.save_images(torch.zeros(8, 1, 8, 8), tmp_path / "pics")
    pixgen.train("vae", data="folder:pics", steps=1, batch_size=4, image_size=8,
                 out="vae-run", progress=False, width=8, latent_dim=2,
                 overrides={"train.tensorboard": False, "train.sample_every": 0})
    saved = (tmp_path / "vae-run" / "config.yaml").read_text()
    assert f"folder:{tmp_path / 'pics'}" in saved


@pytest.mark.parametrize("args", [
    ["sample", "RUN", "--batch-size", "0"],
    ["sample", "RUN", "--nrow", "-2"],
    ["sample", "RUN", "--temperature", "nan"],
    ["eval", "RUN", "--batch-size", "-1"],
])
def test_values_out_of_range_are_refused_by_the_parser(run, args, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(run) if a == "RUN" else a for a in args])
    assert e.value.code == 2
    assert "must be" in capsys.readouterr().err


@pytest.mark.parametrize("args", [
    ["sample", "RUN", "--seed", "99999999999999999999999"],
    ["sample", "RUN", "--seed", "-1"],
    ["interpolate", "RUN", "--seeds", "1", "-2"],
    ["latent-map", "RUN", "--seed", "-1"],
    ["inpaint", "RUN", "--image", "digits", "--seed", "4294967296"],
])
def test_seeds_out_of_range_are_refused_by_the_parser(run, args, capsys):
    """A seed past 2**63 was a torch traceback, a negative one numpy's or sklearn's (and
    sample --seed -1 drew the images of --seed 2**64 - 1)."""
    with pytest.raises(SystemExit) as e:
        main([str(run) if a == "RUN" else a for a in args])
    assert e.value.code == 2
    assert "must be 0 to 4294967295" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["sample", "RUN", "--n", "100000000000", "--labels", "3", "--out", "OUT/g.png"],
     "--n: 100,000,000,000 images is more than a grid shows (10,000 at most)"),
    (["sample", "RUN", "--n", "100000000", "--out", "OUT/s.npz"],
     "--n: 100,000,000 images take 24 GiB"),
    (["sample", "RUN", "--n", "30000000000", "--out", "OUT/many"],
     "is more than 100,000,000; sample in several runs"),
    (["interpolate", "RUN", "--n", "100000000000", "--rows", "1"],
     "100000000000 images per row x 1 row(s) is more than the 10,000 images"),
    (["interpolate", "RUN", "--gif", "--out", "OUT/x.png"], "--gif writes an animated GIF"),
    (["interpolate", "RUN", "--seeds", "1", "2", "--rows", "3"],
     "--rows sets how many paths --seed draws; with --seeds the paths are given"),
])
def test_counts_and_flags_an_output_cannot_take(run, tmp_path, capsys, args, message):
    """Huge counts ended in a MemoryError or an allocator traceback; --gif with a .png
    name wrote x.gif, and --rows with --seeds was ignored, without a word."""
    args = [str(run) if a == "RUN" else a.replace("OUT", str(tmp_path)) for a in args]
    assert main(args) == 2
    one_error(capsys, message)
    assert not any(tmp_path.iterdir())


def test_interpolate_never_overwrites_its_images(run, tmp_path, capsys):
    pixgen.save_images(torch.zeros(2, 1, 16, 16), tmp_path / "in")
    a, b = sorted((tmp_path / "in").iterdir())
    before = a.read_bytes()
    assert main(["interpolate", str(run), "--images", str(a), str(b), "--out", str(a)]) == 2
    one_error(capsys, "is one of the --images: writing it would overwrite that image")
    assert a.read_bytes() == before


def test_paths_that_cannot_be_written_or_read(run, tmp_path, capsys):
    (tmp_path / "grid.png").mkdir()
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "grid.png")]) == 2
    one_error(capsys, "Is a directory", "grid.png")
    (tmp_path / "file.png").write_bytes(b"")
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "file.png" / "x")]) \
        == 2
    one_error(capsys, "file.png")
    assert main(["interpolate", str(run), "--out", str(tmp_path / "i.txt")]) == 2
    one_error(capsys, "give a file name ending in .png")
    assert main(["train", "dcgan", "--config", str(tmp_path)]) == 2
    one_error(capsys, "is a folder")
    (tmp_path / "bin.yaml").write_bytes(bytes(range(128, 256)))
    assert main(["train", "dcgan", "--config", str(tmp_path / "bin.yaml")]) == 2
    one_error(capsys, "is not a text file")
    (tmp_path / "bad.yaml").write_text("train:\n  steps: [1,\n")
    assert main(["train", "dcgan", "--config", str(tmp_path / "bad.yaml")]) == 2
    one_error(capsys, "is not valid YAML (line")


def test_commands_on_models_that_cannot_run_them(tmp_path, capsys):
    cls = MODELS.get("srresnet")
    info = DataInfo("digits", image_size=16, channels=1)
    model = cls(**cls.config_from_data(info), width=8, blocks=1)
    from pixgen.train import checkpoint as ckpt

    ckpt.save_weights(tmp_path / "sr", model_name="srresnet", model_config=model.config,
                      state_dict=model.state_dict(), data=vars(info))
    assert main(["augment", str(tmp_path / "sr"), "--n", "4",
                 "--out", str(tmp_path / "a")]) == 2
    one_error(capsys, "needs a model with 'sample'", "(models that do: cgan, dcgan")
    assert main(["latent-map", str(tmp_path / "sr"), "--n", "-5"]) == 2
    one_error(capsys, "--n must be at least 3")
    assert main(["latent-map", str(tmp_path / "sr")]) == 2
    one_error(capsys, "(models that do: diffusion, glow, vae)")
    assert main(["demo", "--steps", "0"]) == 2
    one_error(capsys, "--steps must be at least 1")
    # inputs at another size than the model's are resized, and the user is told
    pixgen.save_images(torch.zeros(2, 1, 8, 8), tmp_path / "low")
    with pytest.warns(UserWarning, match=r"2 input\(s\) \(8x8\) were resized and "
                                         r"centre-cropped to 4x4"):
        pixgen.superres_files(model, tmp_path / "low", tmp_path / "high")


def test_the_first_stage_of_a_two_stage_model_must_finish(tmp_path, capsys):
    assert main(["train", "vqvae-prior", "--data", "digits", "--image-size", "16",
                 "--batch-size", "8", "--steps", "2", "--stage1-steps", "100000",
                 "--set", "train.max_minutes=0.0001", "--set", "model.width=8",
                 "--set", "model.layers=2", "--no-progress", "--out", str(tmp_path / "p"),
                 "--set", "train.tensorboard=false", "--set", "train.sample_every=0"]) == 2
    out, err = capsys.readouterr()
    assert "stage one stopped early" in err
    # the stage one's own stop line names the two-stage run's resume, not OUT/stage1's
    assert f"Resume with: pixgen train vqvae-prior --out {tmp_path / 'p'} --resume" in out
    assert "stage1 --resume" not in out + err

    # --stage1-steps only where a stage one is trained
    assert main(["train", "dcgan", "--stage1-steps", "5", *TINY]) == 2
    one_error(capsys, "--stage1-steps is for two-stage models (vqvae-prior)")
    assert main(["train", "vqvae-prior", "--data", "digits", "--from", str(tmp_path / "p"),
                 "--stage1-steps", "5", "--no-progress"]) == 2
    one_error(capsys, "--stage1-steps does not go with --from")
    assert main(["train", "vqvae-prior", "--out", str(tmp_path / "p"), "--resume",
                 "--stage1-steps", "5"]) == 2
    one_error(capsys, "--stage1-steps does not go with --resume")


def test_sample_output_is_checked_before_sampling(run, tmp_path, capsys, monkeypatch):
    def no_sampling(*a, **k):
        raise AssertionError("sampled before the output was checked")

    monkeypatch.setattr(pixgen, "generate", no_sampling)
    assert main(["sample", str(run), "--n", "2", "--out", ""]) == 2
    one_error(capsys, "--out is empty")
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "g.gif")]) == 2
    one_error(capsys, "unknown file type '.gif'")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "000000.png").write_bytes(b"")
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "old")]) == 2
    one_error(capsys, "is not empty; give a new or empty folder")
    monkeypatch.undo()
    (tmp_path / "new").mkdir()
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "new")]) == 0
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["000000.png", "000001.png"]


def test_a_two_stage_run_stopped_in_stage_one_resumes_both_stages(tmp_path, capsys):
    from safetensors.torch import load_file

    args = ["--data", "digits", "--image-size", "16", "--batch-size", "8", "--steps", "2",
            "--stage1-steps", "4", "--set", "model.width=8", "--set", "model.layers=2",
            "--no-progress", "--set", "train.tensorboard=false", "--set", "train.sample_every=0",
            "--set", "train.log_every=2"]
    assert main(["train", "vqvae-prior", *args, "--out", str(tmp_path / "whole")]) == 0
    assert main(["train", "vqvae-prior", *args, "--out", str(tmp_path / "cut"),
                 "--set", "train.max_minutes=0.0001"]) == 2
    assert f"pixgen train vqvae-prior --out {tmp_path / 'cut'} --resume" in \
        capsys.readouterr().err
    assert main(["train", "vqvae-prior", "--out", str(tmp_path / "cut"), "--resume",
                 "--set", "train.max_minutes=null", "--no-progress"]) == 0
    assert not (tmp_path / "cut" / "config.pending.yaml").exists()
    for name in ("stage1/model.safetensors", "model.safetensors"):
        whole, cut = (load_file(tmp_path / r / name) for r in ("whole", "cut"))
        assert whole.keys() == cut.keys() and all(torch.equal(whole[k], cut[k]) for k in whole)
