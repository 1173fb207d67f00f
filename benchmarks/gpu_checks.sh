#!/usr/bin/env bash
# The checks and figures that need a CUDA GPU, in stages that each fit a 10-minute call.
#
#   bash benchmarks/gpu_checks.sh STAGE [OUT]
#
# Stages (run them from the repository root, on a machine with a CUDA GPU):
#   wheels        (on a machine with internet, once) download diffusers and every wheel it
#                 depends on into .whl/ (git-ignored; about 40 MB, carry it to the GPU)
#   tests         the CUDA tests: bf16, channels-last, torch.compile, device dropout,
#                 checkpoints loaded on a CPU, torchrun with NCCL, and no host
#                 synchronisation in any model's training step, and the web app's backend
#                 serving from the GPU
#   speed-gan     benchmarks/speed: the GAN family against the classic loop (dcgan target 5x)
#   speed-rest    benchmarks/speed: vae, vqvae, pixelcnn, flow and diffusion (DDPM's CIFAR-10
#                 U-Net at batch 128: the 35%-of-bf16-peak target)
#   diffusers     benchmarks/diffusion_speed.py --size cifar: pixgen against diffusers'
#                 UNet2DModel loop at 35.7M parameters (target 1.3x)
#   compile       the diffusion speed setup again with torch.compile, then channels-last
#                 (pixgen's diffusion trains NCHW by default: GroupNorm is slower
#                 channels-last on a CPU; this measures it on the GPU)
#
# Each stage writes its log, and BENCHMARKS.md as the stage left it, to OUT (default
# gpu-out/). Without pixgen installed, it runs from the checkout (PYTHONPATH). If .whl/
# holds wheels, a venv over the machine's own packages (its torch) gets what diffusers
# needs and the machine lacks, from .whl/ only (no index is contacted). The speed stages
# give the classic loop 4 loader workers and one round, to fit the 10-minute calls.
set -euo pipefail
stage=${1:?usage: bash benchmarks/gpu_checks.sh STAGE [OUT]}
out=${2:-${OUT:-gpu-out}}
case "$stage" in
    wheels|tests|speed-gan|speed-rest|diffusers|compile) ;;
    *) echo "unknown stage: $stage (wheels, tests, speed-gan, speed-rest, diffusers, compile)"
       exit 2 ;;
esac
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "$stage" = wheels ]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
    python3 -m pip download --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 -d .whl diffusers==0.42.1
    exit 0
fi

PY=python3
if compgen -G ".whl/*.whl" > /dev/null; then
    [ -x /tmp/gpu-venv/bin/python ] || python3 -m venv --system-site-packages /tmp/gpu-venv
    /tmp/gpu-venv/bin/python -m pip install -q --no-index --find-links .whl --no-cache-dir \
        diffusers==0.42.1
    PY=/tmp/gpu-venv/bin/python
fi
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print(torch.__version__, torch.cuda.get_device_name())"

log="$out/$stage.log"
case "$stage" in
    tests)
        "$PY" -m pytest -q -p no:cacheprovider tests/train/test_cuda_fast_path.py \
            tests/web/test_web_cuda.py \
            tests/train/test_host_sync.py 2>&1 | tee "$log" ;;
    speed-gan)
        "$PY" benchmarks/speed/run_all.py --device cuda --families gan --repeats 1 \
            --workers 4 --write BENCHMARKS.md --json "$out/speed-gan.json" 2>&1 | tee "$log" ;;
    speed-rest)
        "$PY" benchmarks/speed/run_all.py --device cuda \
            --families vae,vqvae,pixelcnn,flow,diffusion --repeats 1 --workers 4 \
            --write BENCHMARKS.md --json "$out/speed-rest.json" 2>&1 | tee "$log" ;;
    diffusers)
        "$PY" benchmarks/diffusion_speed.py --device cuda --size cifar --batch-size 128 \
            --steps 100 --warmup 20 --sample-n 64 --repeats 2 --write BENCHMARKS.md \
            --json "$out/diffusers.json" 2>&1 | tee "$log" ;;
    compile)
        { "$PY" benchmarks/speed/diffusion.py --device cuda --compile --repeats 1 \
              --workers 4 --json "$out/compile.json"
          "$PY" benchmarks/speed/diffusion.py --device cuda --channels-last true \
              --repeats 1 --workers 4 --json "$out/channels-last.json"; } 2>&1 | tee "$log" ;;
esac
cp BENCHMARKS.md "$out/BENCHMARKS.md"
