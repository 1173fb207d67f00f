"""Multi-process training: torchrun with gloo on CPU computes what one process computes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pixgen.errors import ConfigError, PixgenError
from pixgen.utils import distributed

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="this torch has no torch.distributed")

ARGS = ["train", "pixelcnn", "--data", "digits", "--batch-size", "16", "--device", "cpu",
        "--no-progress", "--set", "data.num_images=96", "--set", "model.width=16",
        "--set", "model.layers=3", "--set", "train.log_every=2",
        "--set", "train.sample_every=0", "--set", "train.tensorboard=false"]
STEPS = 6
# torchrun gives each worker one thread; so does the reference, so that both reduce in the
# same order inside each kernel
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300, **kw)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def torchrun(*args):
    return run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2", *args])


def max_gap(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process, the global batch of 16 in two accumulated halves of 8: the gradient
    (g1 + g2) / 2 of the two processes' all-reduce, in the same floating-point order."""
    out = tmp_path_factory.mktemp("one") / "run"
    run([sys.executable, "-m", "pixgen", *ARGS, "--steps", str(STEPS), "--out", str(out),
         "--set", "train.grad_accum=2"])
    return out


def test_two_processes_end_with_the_weights_of_one(single, tmp_path):
    out = tmp_path / "run"
    log = torchrun("-m", "pixgen", *ARGS, "--steps", str(STEPS), "--out", str(out))
    assert log.count("trained pixelcnn") == 1, "only rank 0 reports"
    one = torch.load(single / "state.pt", weights_only=True)
    two = torch.load(out / "state.pt", weights_only=True)
    assert max_gap(one["model"], two["model"]) <= 1e-6
    assert max_gap(load_file(single / "model.safetensors"),
                   load_file(out / "model.safetensors")) <= 1e-6  # the EMA weights
    adam1, adam2 = one["optimizers"]["model"]["state"], two["optimizers"]["model"]["state"]
    assert max(float((adam1[i]["exp_avg_sq"] - adam2[i]["exp_avg_sq"]).abs().max())
               for i in adam1) <= 1e-9
    assert two["world_size"] == 2 and len(two["rng_ranks"]) == 2
    # the logged losses are the global batch's, logged once
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == STEPS // 2
    ref = (single / "metrics.jsonl").read_text().splitlines()
    import json
    for a, b in zip(lines, ref):
        assert json.loads(a)["model/loss"] == pytest.approx(json.loads(b)["model/loss"],
                                                            abs=1e-6)


def test_a_run_resumes_with_another_world_size(single, tmp_path):
    out = tmp_path / "run"
    torchrun("-m", "pixgen", *ARGS, "--steps", str(STEPS // 2), "--out", str(out))
    log = run([sys.executable, "-m", "pixgen", "train", "pixelcnn", "--out", str(out), "--resume",
               "--steps", str(STEPS), "--no-progress", "--set", "train.grad_accum=2"])
    assert "resuming a 2-process run with 1 process" in log
    one = torch.load(single / "state.pt", weights_only=True)
    resumed = torch.load(out / "state.pt", weights_only=True)
    assert resumed["step"] == STEPS and resumed["world_size"] == 1
    assert max_gap(one["model"], resumed["model"]) <= 1e-6


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_joined_by_c10d_rendezvous_train_as_one_process(single, tmp_path):
    """Multi-node launch with torchrun's standard rendezvous flags: two "nodes" of one
    process each (two torchrun agents on this machine) meet at a c10d endpoint."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
           "--nproc_per_node", "1", "--rdzv-backend", "c10d",
           "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--rdzv-id", "pixgen-test",
           "-m", "pixgen", *ARGS, "--steps", str(STEPS), "--out", str(out)]
    nodes = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=ENV) for _ in range(2)]
    logs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(logs)
    assert sum(log.count("trained pixelcnn") for log in logs) == 1, "only rank 0 reports"
    one = torch.load(single / "state.pt", weights_only=True)
    two = torch.load(out / "state.pt", weights_only=True)
    assert two["world_size"] == 2 and len(two["rng_ranks"]) == 2
    assert max_gap(one["model"], two["model"]) <= 1e-6


def test_gan_flow_and_vq_state_stay_identical_across_ranks(tmp_path):
    """The trainer checks at every checkpoint that the ranks' weights and buffers agree
    (PixgenError otherwise): GANs' two networks, Glow's data-dependent ActNorm start and
    the VQ-VAE's EMA codebook all stay in step."""
    torchrun(str(Path(__file__).with_name("_ddp_worker.py")), str(tmp_path))
    for name in ("dcgan", "glow", "vqvae"):
        state = torch.load(tmp_path / name / "state.pt", weights_only=True)
        assert state["step"] == 4 and state["world_size"] == 2
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        assert [int(line.split(",")[0].split(":")[1]) for line in lines] == [2, 4]
        assert (tmp_path / name / "samples" / "step-0000004.png").exists()
    # CycleGAN's pools are per rank: both are kept, and a resume gives each its own back
    state = torch.load(tmp_path / "cyclegan" / "state.pt", weights_only=True)
    pools = state["model_training_state_ranks"]
    assert len(pools) == 2 and not torch.equal(pools[0]["pool_a.images"],
                                               pools[1]["pool_a.images"])
    assert torch.equal(state["model_training_state"]["pool_a.images"], pools[0]["pool_a.images"])
    whole = load_file(tmp_path / "cyclegan" / "model.safetensors")
    half = load_file(tmp_path / "cyclegan-half" / "model.safetensors")
    assert max_gap(whole, half) == 0


def test_a_signal_to_one_process_stops_every_process_for_that_reason(tmp_path):
    """Only rank 1 gets SIGTERM: both stop at the next log step, save, and say and exit as
    interrupted (rank 0 used to say it had reached a time limit, and exit 0)."""
    log = torchrun(str(Path(__file__).with_name("_ddp_signal_worker.py")), *ARGS,
                   "--steps", "100", "--out", str(tmp_path / "run"))
    assert "rank 0 exit 143" in log and "rank 1 exit 143" in log
    assert "pixgen: interrupted: stopped at step 4 of 100" in log
    assert "time limit" not in log and "pixgen[rank 1]" not in log
    assert log.count("SIGTERM received") == 0  # rank 0 received none; rank 1 stays quiet
    assert torch.load(tmp_path / "run" / "state.pt", weights_only=True)["step"] == 4


def _drift_worker(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE="2")
    distributed.setup("cpu")
    net = torch.nn.Linear(3, 2)
    distributed.broadcast_module(net)
    distributed.check_in_sync(net, "model")  # in step after the broadcast
    if rank == 1:
        with torch.no_grad():
            net.weight[0, 0] += 1e-3
    try:
        distributed.check_in_sync(net, "model")
        queue.put((rank, "no error"))
    except PixgenError as e:
        queue.put((rank, str(e)))


def test_ranks_that_drift_apart_are_caught():
    import torch.multiprocessing as mp

    port = _free_port()
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    procs = [ctx.Process(target=_drift_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    results = dict(queue.get() for _ in procs)
    assert all("differ between ranks" in results[r] for r in range(2)), results


def test_collective_failures_are_told_only_under_torchrun(monkeypatch):
    peer = RuntimeError("[pair.cc:553] Connection closed by peer [127.0.0.1]:17808")
    late = RuntimeError("[unbound_buffer.cc:78] Timed out waiting 60000ms for recv")
    assert distributed.collective_failure(peer) == ""  # one process: its own error, raised
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.collective_failure(peer).startswith("another process of this run failed")
    assert "PIXGEN_DIST_TIMEOUT_MIN" in distributed.collective_failure(late)
    assert distributed.collective_failure(RuntimeError("shape mismatch")) == ""
    assert distributed.collective_failure(ValueError("Timed out")) == ""


def test_single_process_helpers_are_no_ops():
    assert not distributed.active() and distributed.rank() == 0 and distributed.is_main()
    t = torch.ones(3)
    distributed.all_reduce_sum_(t)
    distributed.average_gradients([], [t])
    assert t.tolist() == [1, 1, 1]
    assert distributed.on_main(lambda: 7) == 7
    assert distributed.all_gather_objects("x") == ["x"]


def test_each_process_trains_on_its_own_gpu(monkeypatch):
    # `--device cuda:1` under torchrun put every process on GPU 1 (NCCL then fails, or the
    # processes share one GPU); a bare `cuda` is each process's LOCAL_RANK GPU.
    assert distributed.device_for_rank(torch.device("cuda", 1)) == torch.device("cuda", 1)
    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert distributed.device_for_rank(torch.device("cuda")) == torch.device("cuda", 0)
    assert distributed.device_for_rank(torch.device("cuda", 0)) == torch.device("cuda", 0)
    assert distributed.device_for_rank(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device cuda:1 under torchrun: every process would "
                       "train on that one GPU; use --device cuda"):
        distributed.device_for_rank(torch.device("cuda", 1))
