"""Run by tests/train/test_distributed.py under torchrun: `pixgen train` where only rank 1
receives SIGTERM (at step 3), to check that both processes stop for that one reason."""

import os
import signal
import sys

from pixgen.cli import main
from pixgen.registry import MODELS

cls = MODELS.get("pixelcnn")
original = cls.training_losses


def signalled(self, batch, step):
    if step == 3 and os.environ.get("RANK") == "1":
        os.kill(os.getpid(), signal.SIGTERM)
    yield from original(self, batch, step)


cls.training_losses = signalled
code = main(sys.argv[1:])
print(f"rank {os.environ.get('RANK')} exit {code}")
sys.exit(0)  # torchrun would report a failure; the test reads the codes above
