"""VQ-VAE: the EMA codebook, dead-code restart, and the two-stage prior."""

import json
from pathlib import Path

import pytest
import torch

import pixgen
from conftest import tiny_overrides
from pixgen.errors import ConfigError, PixgenError, StageOneStopped
from pixgen.nn.quantize import VectorQuantizer

TINY_VQ = {"width": 8, "num_codes": 8, "code_dim": 4, "res_blocks": 1}
TINY_PRIOR = {"width": 8, "layers": 2, "embed_dim": 4}


def clusters(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    centres = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0], [0.0, -4.0]])
    which = torch.randint(0, 4, (n,), generator=generator)
    points = centres[which] + 0.1 * torch.randn(n, 2, generator=generator)
    return points.t().reshape(1, 2, n, 1).contiguous(), centres


def test_ema_codebook_moves_to_the_cluster_means():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    vq = VectorQuantizer(num_codes=6, code_dim=2, decay=0.9, restart_threshold=1.0).train()
    for _ in range(300):
        z, centres = clusters(512, g)
        vq(z)
    dist = torch.cdist(centres, vq.codebook)
    assert dist.min(1).values.max() < 0.1  # every cluster has a code at its mean
    _, _, _, stats = vq.eval()(clusters(2048, g)[0])
    assert stats["perplexity"] > 3.9


def test_dead_codes_are_restarted_onto_the_data():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    vq = VectorQuantizer(num_codes=8, code_dim=2, decay=0.9, restart_threshold=1.0).train()
    vq(clusters(512, g)[0])
    with torch.no_grad():  # strand half the codebook far from the data
        vq.codebook[4:] = 100.0
        vq.ema_sum[4:] = 100.0 * vq.ema_count[4:, None]
    for _ in range(200):
        vq(clusters(512, g)[0])
    assert vq.codebook.abs().max() < 10  # no code was left behind
    _, idx, _, _ = vq.eval()(clusters(4096, g)[0])
    assert len(idx.unique()) >= 6


def test_straight_through_gradient_reaches_the_encoder():
    vq = VectorQuantizer(num_codes=4, code_dim=2).train()
    z = torch.randn(1, 2, 5, 5, requires_grad=True)
    zq, _, commitment, _ = vq(z)
    (zq.sum() + commitment).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_two_stage_command_and_from(tmp_path):
    common = dict(data="digits", batch_size=16, image_size=16, progress=False,
                  overrides=tiny_overrides())
    prior = pixgen.train("vqvae-prior", steps=3, stage1_steps=4, out=tmp_path / "both",
                         **TINY_PRIOR, **common)
    stage1 = tmp_path / "both" / "stage1"
    assert json.loads((stage1 / "config.json").read_text())["model"] == "vqvae"
    assert prior.meta["training"]["steps"] == 3
    # the prior's checkpoint holds the VQ-VAE it was trained on
    vq = pixgen.load(stage1)
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    assert torch.equal(prior.encode(x), vq.encode(x))
    images = prior.sample(3, labels=torch.tensor([1, 2, 3]),
                          generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, 1, 16, 16)
    assert torch.isfinite(prior.nll_bits_per_dim(x)).all()
    # --from an existing vqvae run; the architecture comes from that run
    again = pixgen.train("vqvae-prior", steps=2, from_run=stage1, out=tmp_path / "from",
                         **TINY_PRIOR, **common)
    assert again.config["vqvae"] == vq.config
    assert torch.equal(again.vqvae.quantizer.codebook, vq.quantizer.codebook)


def test_from_without_data_trains_on_the_runs_dataset(tmp_path, monkeypatch):
    """`pixgen train vqvae-prior --from runs/vq` trained the prior on the default dataset
    (shapes) over a codebook learnt on digits."""
    vq = pixgen.train("vqvae", data="digits", steps=1, batch_size=16, image_size=16,
                      out=tmp_path / "vq", progress=False, overrides=tiny_overrides(),
                      **TINY_VQ)
    monkeypatch.chdir(tmp_path)
    prior = pixgen.train("vqvae-prior", steps=1, from_run=vq.run_dir, batch_size=16,
                         progress=False, overrides=tiny_overrides(), **TINY_PRIOR)
    assert prior.meta["data"]["spec"] == "digits"
    assert Path(prior.run_dir).resolve() == (tmp_path / "runs" / "vqvae-prior-digits").resolve()
    assert prior.config["image_size"] == 16
    # a dataset given explicitly wins (at the run's image size and channels)
    other = pixgen.train("vqvae-prior", data="shapes", steps=1, from_run=vq.run_dir,
                         batch_size=16, progress=False, overrides=tiny_overrides(),
                         **TINY_PRIOR)
    assert other.meta["data"]["spec"] == "shapes" and other.config["channels"] == 1


def test_codes_are_the_same_under_bf16_autocast():
    """The trainer's bf16 autocast (the default on CUDA) made the distances a bf16 matmul:
    about 2% of the vectors got another code than in float32, where the prior is scored."""
    torch.manual_seed(0)
    vq = VectorQuantizer(num_codes=64, code_dim=16)
    vq.codebook.copy_(torch.randn(64, 16) * 0.1 + 1.0)  # near one another, far from 0
    z = torch.randn(8, 16, 8, 8) * 0.1 + 1.0
    want = vq.indices(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(vq.indices(z), want)
        vq.train()
        _, idx, _, _ = vq(z)
    assert torch.equal(idx, vq.indices(z))  # after its EMA update, still float32's choice
    assert vq.codebook.dtype == vq.ema_sum.dtype == torch.float32


@pytest.mark.parametrize("args, message", [
    ({"layers": 0}, "layers must be at least 1, not 0"),
    ({"kernel": 4}, "kernel must be odd and at least 3, not 4")])
def test_prior_arguments_are_refused_before_stage_one(tmp_path, args, message):
    """layers=0 let the output see the code it predicts; kernel=4 was a traceback after
    stage one had trained."""
    with pytest.raises(ConfigError, match=message):
        pixgen.train("vqvae-prior", data="digits", steps=1, image_size=16,
                     out=tmp_path / "p", progress=False, **args)
    assert not (tmp_path / "p").exists()
    with pytest.raises(ConfigError, match=message):
        pixgen.train("pixelcnn", data="digits", steps=1, image_size=16,
                     out=tmp_path / "c", progress=False, **args)
    with pytest.raises(ConfigError, match="width must be at least 2 with residual blocks"):
        pixgen.train("vqvae", data="digits", steps=1, image_size=16, width=1,
                     out=tmp_path / "v", progress=False)


def test_errors_name_the_fix(tmp_path):
    common = dict(data="digits", batch_size=16, image_size=16, progress=False,
                  overrides=tiny_overrides())
    vae = pixgen.train("vae", steps=1, out=tmp_path / "vae", width=8, latent_dim=4, **common)
    with pytest.raises(PixgenError, match="needs a finished vqvae run, not a 'vae' run"):
        pixgen.train("vqvae-prior", steps=1, from_run=vae.run_dir, out=tmp_path / "p",
                     **common)
    vq = pixgen.train("vqvae", steps=1, out=tmp_path / "vq", **TINY_VQ, **common)
    with pytest.raises(PixgenError, match="vqvae-prior --from RUN"):
        pixgen.generate(vq, 2)
    with pytest.raises(PixgenError, match="not divisible"):
        pixgen.train("vqvae", steps=1, out=tmp_path / "bad", downsample=3, **TINY_VQ,
                     **{**common, "image_size": 28})


def test_vqvae_logs_reconstruction_and_codebook_metrics(tmp_path):
    pixgen.train("vqvae", data="digits", steps=4, batch_size=16, image_size=16,
                 out=tmp_path / "vq", progress=False, overrides=tiny_overrides(), **TINY_VQ)
    logs = [json.loads(line) for line in (tmp_path / "vq" / "metrics.jsonl").open()]
    keys = set().union(*logs)
    for key in ("model/mse", "model/psnr", "model/perplexity", "model/usage",
                "model/bpd_uniform"):
        assert key in keys


def test_two_stage_run_trains_the_vqvae_it_is_given(tmp_path):
    """model.vqvae sets stage one's architecture (it was once ignored: stage one trained a
    default VQ-VAE, and the prior then refused its weights)."""
    prior = pixgen.train("vqvae-prior", data="digits", steps=2, stage1_steps=2, batch_size=16,
                         image_size=16, out=tmp_path / "both", progress=False,
                         overrides=tiny_overrides(), vqvae=TINY_VQ, **TINY_PRIOR)
    stage1 = json.loads((tmp_path / "both" / "stage1" / "config.json").read_text())
    assert {k: stage1["config"][k] for k in TINY_VQ} == TINY_VQ
    assert prior.vqvae.num_codes == TINY_VQ["num_codes"]


def test_a_stage_one_that_stops_early_stops_the_command(tmp_path):
    """The prior would otherwise train on the codes of a half-trained VQ-VAE (a Ctrl-C in
    stage one used to go on to train the whole prior, and exit 0)."""
    with pytest.raises(StageOneStopped, match="stage one stopped early") as e:
        pixgen.train("vqvae-prior", data="digits", steps=2, stage1_steps=100000,
                     batch_size=16, image_size=16, out=tmp_path / "both", progress=False,
                     overrides=tiny_overrides(**{"train.max_minutes": 1e-4}),
                     vqvae=TINY_VQ, **TINY_PRIOR)
    assert f"pixgen train vqvae-prior --out {tmp_path / 'both'} --resume" in str(e.value)
    assert e.value.signal is None  # the time limit, not a signal: exit status 2
    assert (tmp_path / "both" / "stage1" / "state.pt").exists()
    assert not (tmp_path / "both" / "model.safetensors").exists()


def test_from_a_run_of_another_architecture_names_the_tensor(tmp_path):
    common = dict(data="digits", steps=1, batch_size=16, image_size=16, progress=False,
                  overrides=tiny_overrides())
    pixgen.train("vqvae", out=tmp_path / "vq", **TINY_VQ, **common)
    with pytest.raises(PixgenError, match=r"do not fit this vqvae model \(.*size mismatch"):
        pixgen.train("vqvae", from_run=tmp_path / "vq", out=tmp_path / "wider",
                     **{**TINY_VQ, "width": 16}, **common)


def test_a_prior_stopped_before_its_first_checkpoint_resumes(tmp_path, monkeypatch):
    """Stage two killed (or failed) before its first checkpoint left a run that --resume
    refused ("no state.pt") and a fresh start refused too ("already holds a run")."""
    import importlib

    trainer_mod = importlib.import_module("pixgen.train.trainer")
    common = dict(data="digits", batch_size=16, image_size=16, progress=False,
                  overrides=tiny_overrides())
    pixgen.train("vqvae-prior", steps=3, stage1_steps=2, out=tmp_path / "straight",
                 vqvae=TINY_VQ, **TINY_PRIOR, **common)
    real_run = trainer_mod.Trainer.run

    def killed(self):
        if self.cfg.model == "vqvae-prior":
            raise KeyboardInterrupt  # what kill -9 leaves: no checkpoint of the prior
        return real_run(self)

    monkeypatch.setattr(trainer_mod.Trainer, "run", killed)
    with pytest.raises(KeyboardInterrupt):
        pixgen.train("vqvae-prior", steps=3, stage1_steps=2, out=tmp_path / "run",
                     vqvae=TINY_VQ, **TINY_PRIOR, **common)
    assert not (tmp_path / "run" / "state.pt").exists()
    monkeypatch.setattr(trainer_mod.Trainer, "run", real_run)
    got = pixgen.train(out=tmp_path / "run", resume=True, progress=False)
    assert got.meta["training"]["steps"] == 3
    assert not (tmp_path / "run" / "config.pending.yaml").exists()
    a = (tmp_path / "straight" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "run" / "model.safetensors").read_bytes()
