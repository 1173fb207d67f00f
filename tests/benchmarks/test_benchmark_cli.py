"""The benchmark scripts refuse bad flags in one line, before they measure anything (a
benchmark that ran for minutes and then failed, or published an empty table, cost a GPU
lease its time)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize("script, args, message", [
    ("speed/gan.py", ["--models", "foo"], "--models: unknown 'foo'; choose from gan-mlp"),
    ("speed/run_all.py", ["--families", "gan,foo"], "--families: unknown 'foo'"),
    ("speed/run_all.py", ["--models", "dcgan,vae", "--families", "gan"],
     "--models: unknown 'vae'"),
    ("speed/vae.py", ["--repeats", "0"], "--repeats: 0 is below 1"),
    ("speed/vae.py", ["--steps", "7", "--warmup", "2"], "multiple of --warmup"),
    ("speed/flow.py", ["--workers", "a"], "--workers 'a'"),
    ("diffusion_speed.py", ["--sample-n", "-1"], "--sample-n: -1 is below 0"),
    ("diffusion.py", ["--stages", "fid", "--write", "B.md"], "needs --reuse"),
    ("diffusion.py", ["--stages", "fdi"], "--stages: unknown 'fdi'"),
    ("apps.py", ["--n-map", "20"], "--n-map: 20 is below 100"),
    ("gan_options.py", ["--seeds", "a"], "--seeds 'a'"),
    ("gan_options.py", ["--small", "50"], "needs at least one batch"),
    ("gan_lazy_r1.py", ["--every", "1:bn"], "K:NORM with NORM one of auto, batch, none"),
    ("likelihood.py", ["--only", "foo"], "--only: unknown 'foo'"),
    ("dropout_speed.py", ["--rounds", "0"], "--rounds: 0 is below 1"),
])
def test_bad_flags_are_refused_at_once(script, args, message, tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "B.md").exists()


def test_the_report_helpers():
    sys.path.insert(0, str(BENCH))
    try:
        from _report import ints, machine, names, staged_command, whole
    finally:
        sys.path.remove(str(BENCH))
    assert whole(0)("0") == 0 and whole(1)("3") == 3
    import argparse
    for text in ("0", "x", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            whole(1)(text)
    assert ints("0,1", "--seeds") == [0, 1]
    with pytest.raises(SystemExit, match="at least 0"):
        ints("0,-1", "--seeds")
    assert names("b,a", "--x", ["a", "b"]) == ["b", "a"]
    assert "7 threads" in machine(7)
    args = argparse.Namespace(grids=None, write="B.md")
    settings = {"runs": {"x": 1}, "n_fid": 400}
    assert staged_command("diffusion.py", {"a": 1, "b": 2}, ["a", "b"], settings, args) == \
        "python benchmarks/diffusion.py --n-fid 400 --write B.md"
    with pytest.raises(SystemExit, match="no results for b with these settings"):
        staged_command("diffusion.py", {"a": 1}, ["a", "b"], settings, args)
