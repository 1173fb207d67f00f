"""`pixgen eval` end to end, and the calibration of its scores with classifier features."""

import importlib
import json

import pytest
import torch

import pixgen
from conftest import TINY_MODEL_ARGS, tiny_overrides
from pixgen.cli import main
from pixgen.data import load_dataset
from pixgen.data.transforms import gaussian_blur, gaussian_noise, to_float, to_uint8
from pixgen.errors import ConfigError, DataError, NonFiniteSamples
from pixgen.eval import features as feats
from pixgen.eval.evaluate import FeatureSet, evaluate_run, evaluate_sets, featurize, score

SIZE = 16


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private classifier cache with a quick training recipe (the real one is longer)."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("cache")
    mp.setenv("PIXGEN_CACHE_DIR", str(root))
    mp.setitem(feats.CLASSIFIER_TRAINING, "steps", 400)
    mp.setitem(feats.CLASSIFIER_TRAINING, "model_args", {"width": 16, "feature_dim": 64})
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def extractor(cache):
    info = load_dataset("digits", image_size=SIZE).info
    return feats.get_extractor("classifier", info, progress=False)


@pytest.fixture(scope="module")
def digits():
    return (load_dataset("digits", image_size=SIZE),
            load_dataset("digits", split="test", image_size=SIZE))


def _fid(extractor, real_images, fake_images, **kw):
    return score(featurize(extractor, real_images), featurize(extractor, fake_images),
                 num_classes=10, **kw)


def test_classifier_is_trained_once_and_cached(extractor, cache):
    runs = list((cache / "classifiers").iterdir())
    assert [r.name for r in runs] == [f"digits-{SIZE}px-1ch"]
    acc = json.loads((runs[0] / "eval.json").read_text())["test_accuracy"]
    assert acc > 0.85, f"the evaluation classifier reached only {acc:.2f} test accuracy"
    assert "test accuracy" in extractor.description
    stamp = (runs[0] / "model.safetensors").stat().st_mtime_ns
    info = load_dataset("digits", image_size=SIZE).info
    feats.get_extractor("classifier", info, progress=False)
    assert (runs[0] / "model.safetensors").stat().st_mtime_ns == stamp


def test_fid_grows_with_noise_and_blur(extractor, digits):
    """Against the training set: the clean test set scores lowest, and stronger noise or blur
    of the test images scores strictly worse, step by step."""
    train, test = digits
    real = featurize(extractor, train.images)

    def fid(images):
        return score(real, featurize(extractor, images), num_classes=10)["fid"]

    floor = fid(test.images)
    x = to_float(test.images)
    gen = torch.Generator().manual_seed(0)
    noise = [fid(to_uint8(gaussian_noise(x, s, generator=gen))) for s in (0.1, 0.2, 0.35, 0.6)]
    blur = [fid(to_uint8(gaussian_blur(x, s))) for s in (0.6, 1.0, 1.5, 2.5)]
    for ladder in (noise, blur):
        assert [floor, *ladder] == sorted([floor, *ladder]), (floor, ladder)
        assert len(set(ladder)) == len(ladder) and floor < 0.1 * ladder[-1], (floor, ladder)


def test_collapsed_generators_score_worse(extractor, digits):
    train, test = digits
    healthy = _fid(extractor, test.images, train.images[:360])
    one_image = _fid(extractor, test.images, train.images[:1].expand(360, -1, -1, -1))
    one_class = _fid(extractor, test.images, train.images[train.labels == 3][:360])
    for collapsed in (one_image, one_class):
        assert collapsed["fid"] > 3 * healthy["fid"]
        assert collapsed["recall"] < healthy["recall"] - 0.3
        assert collapsed["coverage"] < healthy["coverage"] - 0.3
        assert collapsed["classes_hit"] <= 2 < healthy["classes_hit"]
        assert collapsed["class_entropy"] < 0.3 < healthy["class_entropy"]


def test_evaluate_run_writes_report_and_model_card(cache, tmp_path, capsys):
    run = tmp_path / "vae"
    pixgen.train("vae", data="digits", steps=20, batch_size=16, image_size=SIZE, out=run,
                 progress=False, overrides=tiny_overrides(), **TINY_MODEL_ARGS["vae"])
    # a small k keeps this test fast (k = 1000 by default, for an IWAE bound per image)
    assert main(["eval", str(run), "--n", "200", "--iwae-k", "20", "--no-progress"]) == 0
    out = capsys.readouterr().out
    for label in ("FID", "KID", "IS", "precision", "recall", "density", "coverage",
                  "classes hit", "bits/dim"):
        assert label in out
    result = json.loads((run / "eval.json").read_text())
    assert result["n_fake"] == 200 and result["n_real"] == len(load_dataset("digits",
                                                                            split="test"))
    assert result["bits_per_dim_kind"] == "ELBO bound" and 0 < result["bits_per_dim"] < 100
    card = (run / "README.md").read_text()
    assert "| FID |" in card and "samples.png" in card and (run / "samples.png").exists()
    # what the figures are: the size compared at, KID on whole sets, which bound, on what
    assert "digits (test split, 16 px)" in out
    assert result["kid_std"] is None and "KID std" not in out  # 200 and 359 < 1000
    assert "(KID: one estimate on the whole sets" in out
    assert "(bits/dim: ELBO bound, on 359 real images; IWAE bound with k = 20)" in out
    assert "- bits/dim: ELBO bound, on 359 real images" in card
    # The same seed gives the same numbers.
    again = evaluate_run(run, n=200, progress=False, write=False, iwae_k=20)
    assert again["fid"] == pytest.approx(result["fid"], rel=1e-6)
    assert again["bits_per_dim_iwae"] == pytest.approx(result["bits_per_dim_iwae"], rel=1e-6)
    # What the samples were drawn with, defaults included, and how IS was split
    assert result["sampling"] == {"temperature": 1.0}
    assert "(sampled with temperature 1.0)" in out and "- sampled with temperature 1.0" in card
    assert "--seed 0 --batch-size 256 --iwae-k 20 --temperature 1.0`" in card
    assert "(IS: mean and std over 10 parts of 20 generated images; parts this small" in out
    # another temperature gives other samples, and says so
    assert main(["eval", str(run), "--n", "200", "--no-progress", "--temperature", "0.5",
                 "--split", "train", "--iwae-k", "0", "--nll-n", "50"]) == 0
    cold = json.loads((run / "eval.json").read_text())
    assert cold["sampling"] == {"temperature": 0.5} and cold["fid"] != result["fid"]
    card = (run / "README.md").read_text()
    assert "--batch-size 256 --split train --nll-n 50 --iwae-k 0 --temperature 0.5`" in card
    assert cold["bits_per_dim_n"] == 50 and "bits_per_dim_iwae" not in cold
    # options the model does not take, and sampling flags without a run, are refused
    with pytest.raises(ConfigError, match=r"--steps: vae sampling does not take it \(it "
                       r"takes: --temperature\)"):
        evaluate_run(run, n=20, progress=False, write=False, sampling={"steps": 5})
    capsys.readouterr()
    assert main(["eval", "--real", "digits", "--fake", str(tmp_path), "--eta", "0"]) == 2
    assert "--eta sets how a RUN is sampled" in capsys.readouterr().err


def test_diverged_samples_are_refused_not_scored(cache, tmp_path, capsys, monkeypatch):
    """NaN or inf pixels would become black or white ones with finite scores."""
    import pixgen.eval.evaluate as evaluate
    trainer = importlib.import_module("pixgen.train.trainer")

    images = torch.zeros(20, 1, 4, 4)
    images[3, 0, 1, 1], images[7, 0, 0, 0] = float("nan"), float("inf")
    with pytest.raises(NonFiniteSamples, match="2 of 20 generated images hold NaN or inf"):
        evaluate.generated_to_uint8(images)
    assert evaluate.generated_to_uint8(images[:3]).dtype == torch.uint8

    def nan_generate(model, n, **kwargs):
        return torch.full((n, 1, SIZE, SIZE), float("nan"))

    run = tmp_path / "dcgan"
    monkeypatch.setattr(trainer, "pixgen_generate", nan_generate)
    pixgen.train("dcgan", data="digits", steps=3, batch_size=16, image_size=SIZE, out=run,
                 progress=False, overrides=tiny_overrides(**{"train.eval_every": 3,
                                                            "train.eval_n": 10}),
                 **TINY_MODEL_ARGS["dcgan"])  # the run ends; the evaluation is skipped
    assert "step 3: evaluation skipped: 10 of 10 generated images hold NaN" in \
        capsys.readouterr().out
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(x.get("eval/nonfinite_samples") == 1 for x in logged)
    assert not any("eval/fid" in x for x in logged) and not (run / "best").exists()
    monkeypatch.setattr(pixgen, "generate", nan_generate)
    assert main(["eval", str(run), "--n", "10", "--no-progress"]) == 2
    assert "10 of 10 generated images hold NaN or inf values" in capsys.readouterr().err
    assert not (run / "eval.json").exists()


def test_too_few_images_are_refused_before_scoring(cache, tmp_path, capsys):
    run = tmp_path / "vae"
    pixgen.train("vae", data="digits", steps=2, batch_size=16, image_size=SIZE, out=run,
                 progress=False, overrides=tiny_overrides(), **TINY_MODEL_ARGS["vae"])
    assert main(["eval", str(run), "--n", "9", "--no-progress"]) == 2
    assert "--n must be at least 10, not 9" in capsys.readouterr().err
    pixgen.save_images(torch.zeros(9, 1, 8, 8), tmp_path / "nine")
    with pytest.raises(ConfigError, match="the generated set has 9 image"):
        evaluate_sets("digits", tmp_path / "nine", image_size=SIZE, progress=False)
    with pytest.raises(ConfigError, match="train.eval_n must be at least 10"):
        pixgen.train("vae", data="digits", steps=2, out=tmp_path / "x", progress=False,
                     overrides={"train.eval_n": 5})


def test_eval_every_logs_scores_and_keeps_the_best_checkpoint(cache, tmp_path, capsys):
    run = tmp_path / "dcgan"
    pixgen.train("dcgan", data="digits", steps=6, batch_size=16, image_size=SIZE, out=run,
                 progress=False, overrides=tiny_overrides(**{"train.eval_every": 3,
                                                            "train.eval_n": 100}),
                 **TINY_MODEL_ARGS["dcgan"])
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    scored = [x for x in logged if "eval/fid" in x]
    assert [x["step"] for x in scored] == [3, 6]
    for x in scored:
        assert x["eval/fid"] > 0 and 0 <= x["eval/recall"] <= 1 and "eval/kid_mean" in x
    best = json.loads((run / "best" / "config.json").read_text())["training"]
    assert best["fid"] == min(x["eval/fid"] for x in scored)
    assert best["steps"] == next(x["step"] for x in scored if x["eval/fid"] == best["fid"])
    assert pixgen.load(run / "best").sample(2).shape == (2, 1, SIZE, SIZE)
    assert "FID" in capsys.readouterr().out


def test_a_run_with_evaluations_resumes_exactly(cache, tmp_path, capsys):
    """The first evaluation of a session builds the extractor, which draws random numbers;
    the training's random streams must not see it, or a resumed run trains on differently.
    A better best/ than the checkpoint knows (a kill after an evaluation) is kept."""
    kw = dict(data="digits", batch_size=16, image_size=SIZE, progress=False,
              overrides=tiny_overrides(**{"train.eval_every": 2, "train.eval_n": 10}),
              **TINY_MODEL_ARGS["dcgan"])
    pixgen.train("dcgan", steps=6, out=tmp_path / "whole", **kw)
    pixgen.train("dcgan", steps=4, out=tmp_path / "part", **kw)
    best = tmp_path / "part" / "best" / "config.json"
    meta = json.loads(best.read_text())
    meta["training"]["fid"] = -1.0  # as if an evaluation after the checkpoint did better
    best.write_text(json.dumps(meta))
    before = (tmp_path / "part" / "best" / "model.safetensors").read_bytes()
    pixgen.train(out=tmp_path / "part", resume=True, steps=6, progress=False)
    assert (tmp_path / "whole" / "model.safetensors").read_bytes() == \
        (tmp_path / "part" / "model.safetensors").read_bytes()
    assert (tmp_path / "part" / "best" / "model.safetensors").read_bytes() == before
    assert json.loads(best.read_text())["training"]["eval_n"] == 10
    # FID falls with the sample count: with another eval_n the FIDs do not compare (the
    # -1.0 of best/ would keep it forever); the first evaluation at the new n takes best/
    capsys.readouterr()
    pixgen.train(out=tmp_path / "part", resume=True, steps=8, progress=False,
                 overrides={"train.eval_n": 12})
    assert "train.eval_n changed (10 -> 12): FIDs of different sample counts do not " \
        "compare, so best/ (FID -1.000 at n=10) goes to the first evaluation at n=12" in \
        capsys.readouterr().out
    training = json.loads(best.read_text())["training"]
    assert training["eval_n"] == 12 and training["steps"] == 8 and training["fid"] > 0


def test_eval_two_folders(cache, digits, tmp_path):
    train, _ = digits
    pixgen.save_images(train.images[:100], tmp_path / "fake")
    result = evaluate_sets("digits", tmp_path / "fake", image_size=SIZE, progress=False)
    assert result["n_fake"] == 100 and result["fid"] >= 0 and 0 <= result["recall"] <= 1


def test_eval_errors(cache, tmp_path):
    with pytest.raises(ConfigError, match="needs a RUN"):
        from pixgen.cli import cmd_eval, build_parser

        cmd_eval(build_parser().parse_args(["eval", "--real", "digits"]))
    if "torch_fidelity" not in {m.name for m in __import__("pkgutil").iter_modules()}:
        with pytest.raises(ConfigError, match="pixgen\\[inception\\]"):
            feats.get_extractor("inception", load_dataset("digits").info)
    (tmp_path / "imgs").mkdir()
    pixgen.save_images(torch.zeros(3, 1, 8, 8), tmp_path / "imgs")
    info = load_dataset(f"folder:{tmp_path / 'imgs'}", image_size=8).info
    with pytest.raises(DataError, match="has no labels"):
        feats.get_extractor("classifier", info, progress=False)


def test_feature_set_holds_requested_labels(extractor, digits):
    _, test = digits
    fs = featurize(extractor, test.images[:20], requested=test.labels[:20])
    assert isinstance(fs, FeatureSet) and fs.features.shape == (20, 64)
    assert fs.probs.shape == (20, 10) and torch.allclose(fs.probs.sum(1), torch.ones(20))
    result = score(featurize(extractor, test.images), fs, num_classes=10)
    assert result["conditional_accuracy"] > 0.8  # real images are their own labels


def test_probabilities_over_other_classes_give_is_but_no_mode_coverage():
    gen = torch.Generator().manual_seed(0)
    real = FeatureSet(torch.randn(200, 8, generator=gen), None, None, 200)
    probs = torch.softmax(torch.randn(200, 1008, generator=gen), 1)
    fake = FeatureSet(torch.randn(200, 8, generator=gen), probs, None, 200)
    imagenet = score(real, fake, num_classes=0)
    assert imagenet["is_mean"] > 1 and "classes_hit" not in imagenet
    own = score(real, fake, num_classes=1008)
    assert own["is_mean"] == imagenet["is_mean"] and "classes_hit" in own
    ext = feats.FeatureExtractor("x", "", lambda x: (x, None), 1008, torch.device("cpu"),
                                 dataset_classes=False)
    assert ext.label_classes == 0


def test_a_folder_given_new_classes_gets_its_own_classifier(tmp_path, monkeypatch):
    """The cache was keyed by the folder's path only: after new class subfolders appeared,
    the old classifier scored the new data with its old classes, silently."""
    from pixgen.data.base import DataInfo

    spec = f"folder:{tmp_path}"
    two = DataInfo(spec, 16, 1, 2, ["a", "b"])
    assert feats.classifier_dir(two) == feats.classifier_dir(DataInfo(spec, 16, 1, 2,
                                                                      ["a", "b"]))
    assert feats.classifier_dir(two) != feats.classifier_dir(DataInfo(spec, 16, 1, 3,
                                                                      ["a", "b", "c"]))
    assert feats.classifier_dir(DataInfo("digits", 16, 1, 10, [str(k) for k in range(10)])) \
        .name == "digits-16px-1ch"
    # a failed training leaves nothing half-made in the cache
    monkeypatch.setenv("PIXGEN_CACHE_DIR", str(tmp_path / "cache"))

    def fail(*a, out, **k):  # as a training that dies half way
        (out / "samples").mkdir(parents=True)
        raise DataError("no data")

    monkeypatch.setattr(pixgen, "train", fail)
    with pytest.raises(DataError):
        feats.load_or_train_classifier(two, progress=False)
    assert not any((tmp_path / "cache" / "classifiers").iterdir())
