"""The command line shared by the peer scripts: train one peer on digits 16x16, print JSON."""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def run_peer_cli(peers: dict[str, Callable[..., dict[str, Any]]], *, description: str,
                 argv: list[str] | None = None, with_k: bool = False) -> None:
    """Parse --which/--epochs/--seed/--threads (and --k for IWAE peers), run, print JSON."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--which", choices=sorted(peers), default=sorted(peers)[-1])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    if with_k:
        parser.add_argument("--k", type=int, default=None, help="IWAE samples (vae only)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from pixgen.data import load_dataset

    train = load_dataset("digits", split="train", image_size=16)
    test = load_dataset("digits", split="test", image_size=16)
    kwargs: dict[str, Any] = {"epochs": args.epochs, "seed": args.seed}
    if getattr(args, "k", None) is not None and args.which == "vae":
        kwargs["k"] = args.k
    print(json.dumps(peers[args.which](train.images, test.images, **kwargs), indent=2))


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators (the peers use all three)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
