"""What the web app does, without the web: the runs it serves and one function per tab.

Everything here takes and returns plain values (run names, numbers, HWC uint8 arrays), so it
is tested without a browser, and the Gradio layer (:mod:`pixgen.web.app`) stays a thin
layout. The server only ever loads the runs named on the command line: a request names a run
by its short name, never by a path, and uploaded files are only ever decoded as images.
"""

from __future__ import annotations

import inspect
import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixgen.data import transforms
from pixgen.errors import ConfigError, PixgenError
from pixgen.models.base import CAPABILITIES, PixgenModel
from pixgen.utils.images import make_grid

#: what each tab needs, and the verb its "cannot" message uses
TAB_NEEDS = {"sample": ("sample", "sample"), "interpolate": ("latent", "interpolate"),
             "inpaint": ("inpaint", "inpaint"), "superres": ("superres", "super-resolve"),
             "translate": ("translate", "translate")}
#: bounds of the numbers a request may carry (the sliders show the same)
MAX_SAMPLES = 64
MAX_FRAMES = 16
MAX_STEPS = 1000
MAX_SEED = 2**31 - 1
#: the largest image an upload may decode to (side x side pixels); larger uploads are refused
MAX_UPLOAD_PIXELS = 4096 * 4096
#: built-in example images offered by the Inpaint, Super-resolve and Translate tabs
BUILTIN_EXAMPLES = 8
#: built-in examples are enlarged (nearest neighbour, an integer factor) to about this side,
#: so that a mask can be painted on them; reading them back at the model's size is exact
EXAMPLE_DISPLAY_SIZE = 256
#: the model card shows sample grids shrunk to at most this many pixels a side
CARD_GRID_SIDE = 2048


class WebError(PixgenError):
    """A request the app refuses; its message is shown to the user as is."""


@dataclass
class ServedRun:
    """One run the server was started with: its model, and a lock so that two requests never
    drive the same model at once."""

    name: str
    path: Path
    model: PixgenModel
    lock: threading.Lock = field(default_factory=threading.Lock)
    _examples: list[tuple[str, np.ndarray]] | None = None

    def can(self, capability: str) -> bool:
        return self.model.can(capability)

    def why_not(self, tab: str) -> str:
        """Why this run cannot serve ``tab``, in the words of the model's own error."""
        capability, verb = TAB_NEEDS[tab]
        try:
            self.model.require(capability, verb)
        except PixgenError as e:
            return f"{self.name} ({self.model.name}): {e}"
        return ""


class Runs:
    """The runs a server serves, by short name (the run folder's name; -2, -3, ... appended
    when two runs share a name).

    Args:
        paths: run directories (or their model.safetensors) named on the command line.
        device: where to load the models.
    """

    def __init__(self, paths: Sequence[str | Path], *, device: str = "cpu") -> None:
        import pixgen

        if not paths:
            raise ConfigError("pixgen serve needs at least one run directory, e.g. "
                              "`pixgen serve runs/demo`")
        self.runs: dict[str, ServedRun] = {}
        seen: set[Path] = set()
        for p in paths:
            model = pixgen.load(p, device=device)
            run_dir = Path(getattr(model, "run_dir", Path(p)))
            if run_dir.resolve() in seen:  # named twice (the folder and its weights file)
                continue
            seen.add(run_dir.resolve())
            base = run_dir.resolve().name or "run"
            name, k = base, 2
            while name in self.runs:
                name, k = f"{base}-{k}", k + 1
            self.runs[name] = ServedRun(name, run_dir, model)

    def names(self, capability: str | None = None) -> list[str]:
        return [n for n, r in self.runs.items() if capability is None or r.can(capability)]

    def get(self, name: Any, capability: str | None = None) -> ServedRun:
        """The run called ``name``; only runs the server was started with exist."""
        run = self.runs.get(name) if isinstance(name, str) else None
        if run is None:
            raise WebError(f"no run named {str(name)[:80]!r} is served here; choose one of: "
                           f"{', '.join(self.runs)}")
        if capability is not None and not run.can(capability):
            tab = next(t for t, (c, _) in TAB_NEEDS.items() if c == capability)
            raise WebError(run.why_not(tab))
        return run

    def unavailable(self, tab: str) -> str:
        """Markdown saying which served runs cannot serve ``tab`` and why ("" if all can)."""
        capability = TAB_NEEDS[tab][0]
        lines = [f"- {r.why_not(tab)}" for r in self.runs.values() if not r.can(capability)]
        return "\n".join(lines)


# -- request values ------------------------------------------------------------------------
def _int(value: Any, name: str, lo: int, hi: int) -> int:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise WebError(f"{name} must be a number, not {str(value)[:40]!r}") from None
    if not math.isfinite(v) or v != int(v) or not lo <= v <= hi:
        raise WebError(f"{name} must be a whole number from {lo} to {hi}, not {value}")
    return int(v)


def _float(value: Any, name: str, lo: float, hi: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise WebError(f"{name} must be a number, not {str(value)[:40]!r}") from None
    if not math.isfinite(v) or not lo <= v <= hi:
        raise WebError(f"{name} must be between {lo} and {hi}, not {value}")
    return v


def class_choices(model: PixgenModel) -> list[str]:
    """The classes of a class-conditional model as "k: name" strings (empty otherwise)."""
    if not model.can("class_conditional"):
        return []
    names = list((getattr(model, "meta", {}) or {}).get("data", {}).get("class_names") or [])
    k = model.config["num_classes"]
    return [f"{i}: {names[i]}" if i < len(names) and str(names[i]) != str(i) else str(i)
            for i in range(k)]


def _label(model: PixgenModel, choice: Any) -> int | None:
    """The class index of a "k: name" choice; None for "any"/empty."""
    if choice in (None, "", "any"):
        return None
    if not model.can("class_conditional"):
        raise WebError(f"{model.name!r} is not class-conditional; leave the class empty")
    k = str(choice).split(":", 1)[0].strip()
    return _int(k, "class", 0, model.config["num_classes"] - 1)


def sampling_options(model: PixgenModel, method: str = "sample") -> dict[str, Any]:
    """Which sampling controls ``model.<method>`` takes, with the model's defaults:
    {"temperature": float | None, "steps": int | None, "guidance": bool, "classes": [...]}."""
    fn = getattr(model, method, None)
    params = inspect.signature(fn).parameters if fn is not None else {}
    temp = params["temperature"].default if "temperature" in params else None
    steps = None
    if "steps" in params:
        default = params["steps"].default
        if isinstance(default, int):
            steps = default
        elif method == "inpaint" and hasattr(model, "inpaint_steps"):
            steps = model.inpaint_steps
        else:
            steps = model.config.get("sample_steps", 50)
    guidance = "guidance" in params and bool(model.config.get("cond_drop")) and \
        model.can("class_conditional")
    return {"temperature": temp if isinstance(temp, (int, float)) else None, "steps": steps,
            "guidance": guidance, "classes": class_choices(model)}


def _sampling_kwargs(model: PixgenModel, method: str, *, temperature: Any = None,
                     steps: Any = None, guidance: Any = None) -> dict[str, Any]:
    opts = sampling_options(model, method)
    kw: dict[str, Any] = {}
    if opts["temperature"] is not None and temperature not in (None, ""):
        kw["temperature"] = _float(temperature, "temperature", 0.05, 2.0)
    if opts["steps"] is not None and steps not in (None, ""):
        kw["steps"] = _int(steps, "steps", 1, MAX_STEPS)
    if opts["guidance"] and guidance not in (None, ""):
        kw["guidance"] = _float(guidance, "guidance", 0.0, 20.0)
    return kw


def image_from_upload(array: Any, *, size: int, channels: int, what: str = "the image",
                      notes: list[str] | None = None) -> torch.Tensor:
    """An uploaded image as uint8 (1, channels, size, size), read as ``pixgen`` reads image
    files on the command line: the centre square resized with PIL's bicubic (the same
    pixels as ``pixgen inpaint --image FILE``). An image enlarged from ``size`` by an integer
    factor (nearest neighbour, as the built-in examples are) is read back exactly.

    Args:
        array: the uploaded file's path, decoded as the datasets decode image files
            (transparency over white, 16-bit and palette images, EXIF orientation), or an
            HxW / HxWxC array (an alpha channel composited on white).
        notes: receives a line saying so when the image was cropped or resized.
    """
    from pixgen.data.folder import crop_resize, read_image

    if array is None:
        raise WebError(f"upload {what} first (or pick a built-in one)")
    path = array if isinstance(array, (str, Path)) else None
    if path is not None:
        try:
            array = read_image(path, name=what)
        except PixgenError as e:
            raise WebError(str(e)) from None
    a = np.asarray(array)
    if a.ndim not in (2, 3) or a.size == 0:
        raise WebError(f"{what} is not an image (array of shape {a.shape})")
    if a.dtype != np.uint8:
        if a.dtype.kind == "f" and a.size and float(np.nanmax(a)) <= 1.0:
            a = a * 255.0
        a = np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4) or min(a.shape[:2]) < 1:
        raise WebError(f"{what} is not an image (array of shape {a.shape})")
    if a.shape[0] * a.shape[1] > MAX_UPLOAD_PIXELS:
        raise WebError(f"{what} is {a.shape[1]}x{a.shape[0]} pixels; the limit is "
                       f"{MAX_UPLOAD_PIXELS:,} pixels")
    if a.shape[2] in (2, 4):  # alpha: composite on white, as the data loaders do
        alpha = a[..., -1:].astype(np.float32) / 255
        a = (a[..., :-1] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    h, w = a.shape[:2]
    x = transforms.center_crop(torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))))
    side = x.shape[-1]
    k = side // size
    small = x[:, ::k, ::k] if side % size == 0 else None
    if small is not None and torch.equal(
            small.repeat_interleave(k, 1).repeat_interleave(k, 2), x):
        x = small  # an enlarged image (a built-in example): read back exactly
    else:
        if path is not None:  # decoded again, at the size, exactly as the CLI reads it
            try:
                a = read_image(path, size=size, name=what)
            except PixgenError as e:
                raise WebError(str(e)) from None
        else:
            a = crop_resize(a, size)
        a = a[..., None] if a.ndim == 2 else a
        x = torch.from_numpy(a.transpose(2, 0, 1).copy())
        if notes is not None:
            crop = f"its centre {side}x{side} square " if h != w else ""
            notes.append(f"{what} ({w}x{h}): {crop}resized to {size}x{size}, the model's size")
    return transforms.to_channels(x[None], channels)


def to_display(images: torch.Tensor, *, nrow: int | None = None, padding: int = 2
               ) -> np.ndarray:
    """Images (N, C, H, W) in [-1, 1] or uint8 as one HxWx3 uint8 grid (grey to RGB)."""
    grid = make_grid(images.cpu(), nrow=nrow, padding=padding)
    return np.repeat(grid[..., None], 3, axis=2) if grid.ndim == 2 else grid


def grid_size(n: int, image_size: int, *, nrow: int | None = None, padding: int = 2
              ) -> tuple[int, int]:
    """(width, height) of :func:`to_display`'s grid of ``n`` images."""
    ncol = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / ncol)
    return ncol * (image_size + padding) + padding, rows * (image_size + padding) + padding


# -- tabs ------------------------------------------------------------------------------------
def sample(runs: Runs, name: str, *, n: Any = 16, seed: Any = 0, label: Any = None,
           temperature: Any = None, steps: Any = None, guidance: Any = None,
           progress: bool = False) -> np.ndarray:
    """A grid of ``n`` samples (near-square) from run ``name``."""
    import pixgen

    run = runs.get(name, "sample")
    model = run.model
    n = _int(n, "count", 1, MAX_SAMPLES)
    seed = _int(seed, "seed", 0, MAX_SEED)
    k = _label(model, label)
    kw = _sampling_kwargs(model, "sample", temperature=temperature, steps=steps,
                          guidance=guidance if k is not None else None)
    if "progress" in inspect.signature(model.sample).parameters:
        kw["progress"] = progress
    with run.lock:
        images = pixgen.generate(model, n, seed=seed, labels=None if k is None else [k] * n,
                                 **kw)
    return to_display(images)


def interpolate(runs: Runs, name: str, *, n: Any = 8, seed_a: Any = 0, seed_b: Any = 1,
                method: str = "slerp", label: Any = None, steps: Any = None
                ) -> list[np.ndarray]:
    """The frames of one path between the latents drawn with ``seed_a`` and ``seed_b``, each
    an HxWx3 uint8 image."""
    import pixgen

    run = runs.get(name, "latent")
    model = run.model
    n = _int(n, "frames", 2, MAX_FRAMES)
    seeds = [_int(seed_a, "seed A", 0, MAX_SEED), _int(seed_b, "seed B", 0, MAX_SEED)]
    if method not in ("slerp", "lerp"):
        raise WebError(f"unknown method {str(method)[:20]!r}; use slerp or lerp")
    k = _label(model, label)
    if k is None and model.can("class_conditional"):  # a path keeps one class throughout
        raise WebError("choose the class of the path (a class-conditional model draws every "
                       "frame of one class)")
    kw = _sampling_kwargs(model, "decode", steps=steps) if hasattr(model, "decode") else {}
    with run.lock:
        frames = pixgen.interpolate(model, n=n, method=method, seeds=seeds,
                                    labels=None if k is None else [k], **kw)
    return [to_display(f[None], padding=0) for f in frames[0]]


def builtin_examples(runs: Runs, name: str) -> list[tuple[str, np.ndarray]]:
    """Test images of the run's own dataset, when it loads offline (built-in data or data
    already on disk): [(caption, HxWx3 uint8)], at most :data:`BUILTIN_EXAMPLES`."""
    from pixgen.config import run_data_dir
    from pixgen.data import load_dataset

    run = runs.get(name)
    if run._examples is None:
        model = run.model
        data = (getattr(model, "meta", {}) or {}).get("data", {})
        spec = data.get("spec") or ""
        examples: list[tuple[str, np.ndarray]] = []
        if spec:
            try:
                ds = load_dataset(spec, split="test", image_size=model.config["image_size"],
                                  channels=model.config["channels"], download=False,
                                  num_images=BUILTIN_EXAMPLES,
                                  data_dir=run_data_dir(getattr(model, "run_dir", None)))
                k = max(1, EXAMPLE_DISPLAY_SIZE // model.config["image_size"])
                # unpaired data: half from each domain, named, so BtoA has B images to take
                sets = ([(f"{spec} {ds.domains[0]} test", ds.images[:BUILTIN_EXAMPLES // 2]),
                         (f"{spec} {ds.domains[1]} test", ds.images_b[:BUILTIN_EXAMPLES // 2])]
                        if ds.images_b is not None and len(ds.domains) == 2 else
                        [(f"{spec} test", ds.images[:BUILTIN_EXAMPLES])])
                for caption, images in sets:
                    for i in range(len(images)):
                        img = to_display(images[i:i + 1], padding=0)
                        examples.append((f"{caption} #{i}",
                                         img.repeat(k, axis=0).repeat(k, axis=1)))
            except (PixgenError, OSError):
                examples = []
        run._examples = examples
    return run._examples


def _mask_from_layers(editor: Any, size: int) -> torch.Tensor | None:
    """The drawn mask of an image-editor value: pixels painted on any layer (alpha > 0), as
    bool (1, 1, size, size); None when nothing was drawn."""
    if not isinstance(editor, dict):
        return None
    background = editor.get("background")
    shape = np.asarray(background).shape[:2] if background is not None else None
    drawn = None
    for layer in editor.get("layers") or []:
        a = np.asarray(layer)
        if a.ndim not in (2, 3):
            continue
        if shape is not None and a.shape[:2] != shape:  # it would not line up with the image
            raise WebError(f"the painted layer is {a.shape[1]}x{a.shape[0]} but the image "
                           f"{shape[1]}x{shape[0]}; paint on the uploaded image")
        m = a[..., 3] > 0 if a.ndim == 3 and a.shape[2] == 4 else (
            a if a.ndim == 2 else a.max(-1)) > 0
        drawn = m if drawn is None else drawn | m
    if drawn is None or not drawn.any():
        return None
    # a model pixel is filled when painted strokes cover over a quarter of it; a stroke too
    # thin to cover any pixel that much fills every pixel it touches
    t = torch.from_numpy(drawn)[None, None].float()
    t = transforms.center_crop(t)
    cover = torch.nn.functional.interpolate(t, size=(size, size), mode="area")
    if not cover.any():
        raise WebError("the painted strokes lie outside the centre square the model sees; "
                       "paint inside it")
    return cover > 0.25 if (cover > 0.25).any() else cover > 0


def inpaint(runs: Runs, name: str, *, image: Any, mask: str = "drawn", seed: Any = 0,
            steps: Any = None, label: Any = None, progress: bool = False
            ) -> tuple[np.ndarray, str]:
    """Fill the masked pixels of an uploaded image: returns (a strip of original, masked
    input and completion, a one-line summary).

    Args:
        image: an image-editor value ({"background", "layers", "composite"}) or an image
            array; with ``mask="drawn"`` the painted pixels are the ones to fill.
        mask: "drawn", or a built-in mask (center, left, strokes).
    """
    from pixgen.apps.inpaint import BUILTIN_MASKS, builtin_mask
    from pixgen.apps.inpaint import inpaint as inpaint_images

    run = runs.get(name, "inpaint")
    model = run.model
    size, channels = model.config["image_size"], model.config["channels"]
    seed = _int(seed, "seed", 0, MAX_SEED)
    background = image.get("background") if isinstance(image, dict) else image
    notes: list[str] = []
    x = image_from_upload(background, size=size, channels=channels, notes=notes)
    if mask == "drawn":
        m = _mask_from_layers(image, size)
        if m is None:
            raise WebError("draw over the pixels to fill with the brush, or choose a built-in "
                           f"mask ({', '.join(BUILTIN_MASKS)})")
    elif mask in BUILTIN_MASKS:
        m = builtin_mask(mask, size, seed=seed)
    else:
        raise WebError(f"unknown mask {str(mask)[:20]!r}; use drawn or "
                       f"{', '.join(BUILTIN_MASKS)}")
    kw = _sampling_kwargs(model, "inpaint", steps=steps)
    k = _label(model, label)
    if k is not None:
        kw["labels"] = torch.tensor([k])
    if "progress" in inspect.signature(model.inpaint).parameters:  # type: ignore[attr-defined]
        kw["progress"] = progress
    with run.lock:
        out = inpaint_images(model, x, m, seed=seed, **kw)
    xf = transforms.to_float(x)
    masked = torch.where(m, torch.zeros_like(xf), xf)
    frac = float(m.float().mean())
    return (to_display(torch.cat([xf, masked, out]), nrow=3),
            "; ".join([f"filled {frac:.0%} of the pixels ({size}x{size}) with {model.name}, "
                       f"seed {seed}", *notes]))


def superres(runs: Runs, name: str, *, image: Any, original: bool = False, seed: Any = 0,
             steps: Any = None, progress: bool = False) -> tuple[np.ndarray, str]:
    """Super-resolve an uploaded image: returns (bicubic | model [| original], a summary with
    PSNR / SSIM when ``original``).

    Args:
        original: the upload is a high-resolution original: it is read at the model's
            output size, downscaled by its scale, super-resolved and scored against itself.
            Otherwise it is read at the model's input size (output size / scale).
    """
    from pixgen.apps.superres import evaluate_superres
    from pixgen.apps.superres import superres as superres_images
    from pixgen.models.sr import bicubic_upscale

    run = runs.get(name, "superres")
    model = run.model
    size, scale = model.config["image_size"], model.config["scale"]
    seed = _int(seed, "seed", 0, MAX_SEED)
    kw = _sampling_kwargs(model, "superres", steps=steps)
    if "progress" in inspect.signature(model.superres).parameters:  # type: ignore[attr-defined]
        kw["progress"] = progress
    notes: list[str] = []
    x = image_from_upload(image, size=size if original else size // scale,
                          channels=model.config["channels"], notes=notes)
    with run.lock:
        if original:
            out, bicubic, metrics = evaluate_superres(model, x, seed=seed, **kw)
            strip = torch.cat([bicubic, out, transforms.to_float(x)])
            text = (f"x{scale}: PSNR {metrics['psnr']:.2f} dB (bicubic "
                    f"{metrics['psnr_bicubic']:.2f}), SSIM {metrics['ssim']:.4f} (bicubic "
                    f"{metrics['ssim_bicubic']:.4f}); left to right: bicubic, {model.name}, "
                    f"original")
        else:
            out = superres_images(model, x, seed=seed, **kw)
            strip = torch.cat([bicubic_upscale(transforms.to_float(x), scale), out])
            text = (f"x{scale}: {size // scale} px -> {size} px; left: bicubic, right: "
                    f"{model.name}")
    return to_display(strip, nrow=len(strip)), "; ".join([text, *notes])


def translate(runs: Runs, name: str, *, image: Any, direction: str = "AtoB"
              ) -> tuple[np.ndarray, str]:
    """Translate an uploaded image: returns (input | translation, a summary)."""
    from pixgen.apps.translate import translate as translate_images

    run = runs.get(name, "translate")
    model = run.model
    if direction not in ("AtoB", "BtoA"):
        raise WebError(f"unknown direction {str(direction)[:20]!r}; use AtoB or BtoA")
    notes: list[str] = []
    x = image_from_upload(image, size=model.config["image_size"],
                          channels=model.config["channels"], notes=notes)
    with run.lock:
        out = translate_images(model, x, direction=direction)
    domains = (getattr(model, "meta", {}) or {}).get("data", {}).get("domains") or ["A", "B"]
    src, dst = (domains[0], domains[1]) if direction == "AtoB" else (domains[1], domains[0])
    return (to_display(torch.cat([transforms.to_float(x), out]), nrow=2),
            "; ".join([f"{src} -> {dst} with {model.name}; left: input, right: translation",
                       *notes]))


def model_card(runs: Runs, name: str) -> dict[str, Any]:
    """What the Model card tab shows: {"summary": markdown, "config": dict, "metrics":
    [[name, value], ...] (eval.json), "curves": HxWx3 array or None, "samples": the newest
    sample grid as an array or None}."""
    import tempfile

    from PIL import Image

    from pixgen.utils.plots import plot_training_curves

    run = runs.get(name)
    model, meta = run.model, (getattr(run.model, "meta", {}) or {})
    caps = [c for c in CAPABILITIES if c != "sample" and model.can(c)]
    data = {k: v for k, v in meta.get("data", {}).items() if k != "class_names"}
    tr = meta.get("training", {})
    params = sum(p.numel() for p in model.parameters())
    lines = [f"### {run.name}: {model.name}",
             f"- **parameters:** {params:,}",
             f"- **image:** {model.config.get('channels')} x {model.config.get('image_size')} "
             f"x {model.config.get('image_size')}",
             f"- **data:** {json.dumps(data)}" if data else "",
             (f"- **training:** {tr.get('steps')} steps, batch {tr.get('batch_size')}, "
              f"{tr.get('seconds') or 0:.0f} s, seed {tr.get('seed')}") if tr else "",
             f"- **can:** {', '.join(['sample'] * model.can('sample') + caps) or 'nothing'}",
             f"- **versions:** {json.dumps(meta.get('versions', {}))}"
             if meta.get("versions") else ""]
    metrics: list[list[Any]] = []
    eval_json = run.path / "eval.json"
    if eval_json.is_file():
        try:
            report = json.loads(eval_json.read_text())
        except (OSError, ValueError):
            report = {}
        for k, v in (report if isinstance(report, dict) else {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                metrics.append([k, round(float(v), 6)])
    curves = None
    with tempfile.TemporaryDirectory() as tmp:
        png = plot_training_curves(run.path / "metrics.jsonl", Path(tmp) / "curves.png")
        if png is not None:
            with Image.open(png) as im:
                curves = np.asarray(im.convert("RGB"))
    samples = None
    grids = sorted((run.path / "samples").glob("step-*.png"),
                   key=lambda p: (len(p.name), p.name)) if (run.path / "samples").is_dir() else []
    for grid in reversed(grids):
        try:
            samples = _read_grid(grid)
        except Image.DecompressionBombError:
            lines.append(f"- **newest sample grid:** {grid.name}, too large to show here")
            break
        except OSError:
            continue
        lines.append(f"- **newest sample grid:** {grid.name}")
        break
    return {"summary": "\n".join(x for x in lines if x), "config": model.config,
            "metrics": metrics, "curves": curves, "samples": samples}


def _read_grid(path: Path) -> np.ndarray:
    """A run's own sample grid as RGB, shrunk to at most :data:`CARD_GRID_SIDE` pixels a
    side. Grids of large images exceed the upload pixel limit ``pixgen serve`` sets, whose
    check (in ``Image.open``) warns, and warnings are errors there: the PNG is opened without
    it (ignoring that warning around ``Image.open`` would ignore it, for a moment, for the
    uploads other threads decode). Over twice the limit is still refused."""
    from PIL import Image, PngImagePlugin

    with open(path, "rb") as f:
        try:
            im = PngImagePlugin.PngImageFile(f)
        except SyntaxError as e:  # PIL's "not a PNG file"
            raise OSError(f"{path}: {e}") from None
        with im:
            if im.width * im.height > 2 * (Image.MAX_IMAGE_PIXELS or float("inf")):
                raise Image.DecompressionBombError(f"{path}: {im.width}x{im.height}")
            im = im.convert("RGB")
            im.thumbnail((CARD_GRID_SIDE, CARD_GRID_SIDE), Image.LANCZOS)
            return np.asarray(im)
