"""Run by tests/train/test_distributed.py under torchrun: trains tiny models of the families
whose training state goes beyond gradients through the Python API."""

import sys

import pixgen

out = sys.argv[1]
common = {"data": "digits", "steps": 4, "batch_size": 16, "device": "cpu", "progress": False,
          "overrides": {"data.num_images": 64, "train.log_every": 2, "train.sample_every": 4,
                        "train.ckpt_every": 2, "train.tensorboard": False}}
# dcgan: two networks, batch norm; glow: data-dependent ActNorm initialisation;
# vqvae: EMA codebook with dead-code restarts
pixgen.train("dcgan", out=f"{out}/dcgan", image_size=16, width=8, z_dim=8, **common)
pixgen.train("glow", out=f"{out}/glow", image_size=8, levels=2, depth=2, hidden=16, **common)
pixgen.train("vqvae", out=f"{out}/vqvae", image_size=8, num_codes=16, code_dim=8, width=16,
             restart_threshold=2.0, **common)
# cyclegan: image pools of each rank's own generated images (training state, not weights);
# trained whole, and in two halves with a resume, which must end with the same weights
gan = {**common, "data": "shapes-ab", "image_size": 16, "width": 8, "n_blocks": 1,
       "pool_size": 4,  # (a constant rate: the default decay depends on --steps)
       "overrides": {**common["overrides"], "train.lr_schedule": "constant"}}
pixgen.train("cyclegan", out=f"{out}/cyclegan", **gan)
pixgen.train("cyclegan", out=f"{out}/cyclegan-half", **{**gan, "steps": 2})
pixgen.train(out=f"{out}/cyclegan-half", resume=True, steps=4, progress=False)
