"""The Gradio layout of ``pixgen serve``: one tab per application, each a thin shell over
:mod:`pixgen.web.backend`. Imported only when the app is built (Gradio is optional)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from pixgen.errors import PixgenError
from pixgen.web import backend
from pixgen.web.backend import Runs

#: small images are shown enlarged without blur; the download keeps the true size
CSS = """
.pixels img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }
"""
OUTPUT_HEIGHT = 360

#: Run in the page on load (``launch(js=...)``), with ``__LIMIT__`` the upload limit in bytes
#: and ``__MB__`` in MB. Gradio answers an upload over ``max_file_size`` with HTTP 413 and
#: shows nothing: the image editor spun forever, the image boxes stayed empty. A file picked,
#: dropped or pasted that is over the limit is stopped before Gradio sees it (a capturing
#: listener on the document), and any upload the server refuses all the same (an image
#: editor's composite, re-encoded larger than the file) is said too.
UPLOAD_GUARD_JS = """
() => {
  const limit = __LIMIT__;
  const say = (what) => {
    let box = document.getElementById("pixgen-upload-error");
    if (!box) {
      box = document.createElement("div");
      box.id = "pixgen-upload-error";
      box.setAttribute("role", "alert");
      box.style.cssText = "position:fixed;top:16px;left:50%;transform:translateX(-50%);z-index:10000;" +
        "max-width:480px;" +
        "padding:12px 16px;border-radius:8px;background:#fee2e2;color:#991b1b;" +
        "border:1px solid #fca5a5;font:14px sans-serif;cursor:pointer";
      box.title = "click to close";
      box.onclick = () => box.remove();
      document.body.appendChild(box);
    }
    box.textContent = what + "; this server takes uploads up to __MB__ MB " +
      "(pixgen serve --max-upload-mb). Use a smaller image.";
    clearTimeout(box.pixgenTimer);
    box.pixgenTimer = setTimeout(() => box.remove(), 15000);
  };
  const stop = (files, event) => {
    for (const f of files || []) {
      if (f.size > limit) {
        event.stopImmediatePropagation();
        event.preventDefault();
        say(f.name + " is " + (f.size / 1048576).toFixed(1) + " MB");
        return true;
      }
    }
    return false;
  };
  for (const type of ["change", "input"]) {
    document.addEventListener(type, (e) => {
      const t = e.target;
      if (t instanceof HTMLInputElement && t.type === "file" && stop(t.files, e)) t.value = "";
    }, true);
  }
  document.addEventListener("drop", (e) => stop(e.dataTransfer && e.dataTransfer.files, e),
                            true);
  document.addEventListener("paste", (e) => stop(e.clipboardData && e.clipboardData.files, e),
                            true);
  const fetch0 = window.fetch;
  window.fetch = async (...args) => {
    const response = await fetch0(...args);
    const url = String((args[0] && args[0].url) || args[0]);
    if (response.status === 413 && url.includes("/upload")) say("the upload is too large");
    return response;
  };
}
"""


def upload_guard_js(max_bytes: int) -> str:
    """:data:`UPLOAD_GUARD_JS` for an upload limit of ``max_bytes``."""
    return (UPLOAD_GUARD_JS.replace("__LIMIT__", str(int(max_bytes)))
            .replace("__MB__", f"{max_bytes / 2**20:g}"))


def _shielded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Show pixgen's own errors (bad input, a model that cannot do it) as an error message
    in the page instead of a stack trace."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PixgenError as e:
            raise gr.Error(str(e), print_exception=False) from None

    return wrapper


def _upload(component: Any) -> Any:
    """``component`` with its upload decoding shielded: a file Gradio cannot open (corrupt,
    not an image, a decompression bomb) is one line for the user, not Gradio's message with
    the server's temporary path. Images then reach the backend as file paths, decoded by
    pixgen as its datasets are (transparency, 16-bit and palette images)."""
    import functools

    inner = component.preprocess

    @functools.wraps(inner)
    def preprocess(payload: Any) -> Any:
        try:
            return inner(payload)
        except gr.Error:
            raise
        except Exception as e:  # noqa: BLE001 - PIL raises many types on bad files
            from PIL import Image

            bomb = (Image.DecompressionBombError, Image.DecompressionBombWarning)
            why = (f"it has too many pixels (over {backend.MAX_UPLOAD_PIXELS:,})"
                   if isinstance(e, bomb) else "it is not an image file that can be read")
            raise gr.Error(f"cannot read the uploaded image: {why}", print_exception=False
                           ) from None

    component.preprocess = preprocess
    return component


def _why_markdown(runs: Runs, tab: str, what: str) -> str:
    missing = runs.unavailable(tab)
    if not runs.names(backend.TAB_NEEDS[tab][0]):
        return (f"**None of the served runs can {what}.**\n\n{missing}\n\nStart the server "
                f"with a run that can: `pixgen serve RUN ...`")
    return f"Runs not listed here cannot {what}:\n\n{missing}" if missing else ""


def _class_update(model: Any, visible_if: bool = True, *, any_class: bool = True) -> Any:
    classes = backend.class_choices(model)
    choices = (["any"] if any_class else []) + classes
    return gr.update(choices=choices, value=choices[0] if choices else None,
                     visible=bool(classes) and visible_if)


def _options_updates(runs: Runs, name: str, method: str) -> list[Any]:
    """Visibility and defaults of (class, temperature, steps, guidance) for ``name``."""
    model = runs.get(name).model
    opts = backend.sampling_options(model, method)
    temp, steps = opts["temperature"], opts["steps"]
    return [_class_update(model),
            gr.update(visible=temp is not None, value=temp if temp is not None else 1.0),
            gr.update(visible=steps is not None, value=steps if steps is not None else 50),
            gr.update(visible=bool(opts["guidance"]))]


def _example_update(runs: Runs, name: str) -> Any:
    examples = backend.builtin_examples(runs, name) if name else []
    return gr.update(choices=[c for c, _ in examples], value=None, visible=bool(examples))


def _example_image(runs: Runs, name: str, caption: str) -> Any:
    for c, img in backend.builtin_examples(runs, name):
        if c == caption:
            return img
    return None


def _run_dropdown(runs: Runs, capability: str | None, elem_id: str) -> gr.Dropdown:
    names = runs.names(capability)
    return gr.Dropdown(names, value=names[0] if names else None, label="run",
                       elem_id=elem_id, interactive=True)


def _sample_tab(runs: Runs) -> None:
    names = runs.names("sample")
    gr.Markdown(_why_markdown(runs, "sample", "sample"))
    if not names:
        return
    first = runs.get(names[0]).model
    opts = backend.sampling_options(first, "sample")
    with gr.Row():
        with gr.Column(scale=1):
            run = _run_dropdown(runs, "sample", "sample-run")
            count = gr.Slider(1, backend.MAX_SAMPLES, value=16, step=1, label="count",
                              elem_id="sample-count")
            seed = gr.Number(0, label="seed", precision=0, minimum=0, maximum=backend.MAX_SEED,
                             elem_id="sample-seed")
            label = gr.Dropdown(["any"] + opts["classes"], value="any", label="class",
                                visible=bool(opts["classes"]), elem_id="sample-class")
            temp = gr.Slider(0.05, 2.0, value=opts["temperature"] or 1.0, step=0.05,
                             label="temperature", visible=opts["temperature"] is not None)
            steps = gr.Slider(1, backend.MAX_STEPS, value=opts["steps"] or 50, step=1,
                              label="sampling steps (DDIM)", visible=opts["steps"] is not None)
            guidance = gr.Slider(0.0, 10.0, value=2.0, step=0.25,
                                 label="classifier-free guidance (with a class)",
                                 visible=bool(opts["guidance"]))
            go = gr.Button("Sample", variant="primary", elem_id="sample-btn")
        with gr.Column(scale=2):
            out = gr.Image(label="samples", format="png", type="numpy", interactive=False,
                           height=OUTPUT_HEIGHT, elem_id="sample-out", elem_classes="pixels")

    run.change(lambda n: _options_updates(runs, n, "sample"), run, [label, temp, steps, guidance])

    @_shielded
    def do(name: str, n: float, s: float, k: str, t: float, st: float, g: float,
           progress: gr.Progress = gr.Progress(track_tqdm=True)) -> Any:
        return backend.sample(runs, name, n=n, seed=s, label=k, temperature=t, steps=st,
                              guidance=g, progress=True)

    go.click(do, [run, count, seed, label, temp, steps, guidance], out, api_name="sample")


def _interpolate_tab(runs: Runs) -> None:
    names = runs.names("latent")
    gr.Markdown(_why_markdown(runs, "interpolate", "interpolate"))
    if not names:
        return
    first = runs.get(names[0]).model
    classes = backend.class_choices(first)
    dec = backend.sampling_options(first, "decode")["steps"] if hasattr(first, "decode") else None
    with gr.Row():
        with gr.Column(scale=1):
            run = _run_dropdown(runs, "latent", "interp-run")
            frames = gr.Slider(2, backend.MAX_FRAMES, value=8, step=1, label="frames")
            with gr.Row():
                seed_a = gr.Number(0, label="seed A", precision=0, minimum=0)
                seed_b = gr.Number(1, label="seed B", precision=0, minimum=0)
            method = gr.Radio(["slerp", "lerp"], value="slerp", label="path")
            # a path keeps one class from end to end: a class, not "any"
            label = gr.Dropdown(classes, value=classes[0] if classes else None, label="class",
                                visible=bool(classes))
            steps = gr.Slider(1, backend.MAX_STEPS, value=dec or 50, step=1,
                              label="sampling steps (DDIM)", visible=dec is not None)
            go = gr.Button("Interpolate", variant="primary", elem_id="interp-btn")
        with gr.Column(scale=2):
            strip = gr.Image(label="path from A to B", format="png", interactive=False,
                             elem_id="interp-strip", elem_classes="pixels")
            t = gr.Slider(0, 7, value=0, step=1, label="position along the path",
                          elem_id="interp-t")
            frame = gr.Image(label="frame", format="png", interactive=False,
                             height=OUTPUT_HEIGHT, elem_id="interp-frame", elem_classes="pixels")
    state = gr.State([])

    def options(name: str) -> list[Any]:
        _, _, st, _ = _options_updates(runs, name, "decode")
        return [_class_update(runs.get(name).model, any_class=False), st]

    run.change(options, run, [label, steps])

    @_shielded
    def do(name: str, n: float, a: float, b: float, m: str, k: str, st: float,
           progress: gr.Progress = gr.Progress(track_tqdm=True)) -> Any:
        images = backend.interpolate(runs, name, n=n, seed_a=a, seed_b=b, method=m, label=k,
                                     steps=st)
        import numpy as np

        pad = np.full((images[0].shape[0], 2, 3), 255, np.uint8)
        row = np.concatenate([x for img in images for x in (img, pad)][:-1], axis=1)
        return row, gr.update(maximum=len(images) - 1, value=0), images[0], images

    go.click(do, [run, frames, seed_a, seed_b, method, label, steps], [strip, t, frame, state],
             api_name="interpolate")
    t.change(lambda i, imgs: imgs[int(i)] if imgs and 0 <= int(i) < len(imgs) else None,
             [t, state], frame, api_name=False)


def _image_source(runs: Runs, run: gr.Dropdown, target: Any, first: str, elem_id: str
                  ) -> gr.Dropdown:
    """A 'built-in image' dropdown that loads one of the run's own test images into
    ``target``."""
    examples = backend.builtin_examples(runs, first)
    pick = gr.Dropdown([c for c, _ in examples], value=None, label="or pick a built-in image",
                       visible=bool(examples), interactive=True, elem_id=elem_id)
    run.change(lambda n: _example_update(runs, n), run, pick)
    pick.input(lambda n, c: _example_image(runs, n, c), [run, pick], target, api_name=False)
    return pick


def _inpaint_tab(runs: Runs) -> None:
    from pixgen.apps.inpaint import BUILTIN_MASKS

    names = runs.names("inpaint")
    gr.Markdown(_why_markdown(runs, "inpaint", "inpaint"))
    if not names:
        return
    first = runs.get(names[0]).model
    opts = backend.sampling_options(first, "inpaint")
    with gr.Row():
        with gr.Column(scale=1):
            run = _run_dropdown(runs, "inpaint", "inpaint-run")
            mask = gr.Radio(["drawn", *BUILTIN_MASKS], value="drawn", label="mask",
                            info="drawn: paint over the pixels to fill with the brush",
                            elem_id="inpaint-mask")
            seed = gr.Number(0, label="seed", precision=0, minimum=0)
            label = gr.Dropdown(["any"] + opts["classes"], value="any", label="class",
                                visible=bool(opts["classes"]))
            steps = gr.Slider(1, backend.MAX_STEPS, value=opts["steps"] or 50, step=1,
                              label="steps", visible=opts["steps"] is not None)
            go = gr.Button("Inpaint", variant="primary", elem_id="inpaint-btn")
        with gr.Column(scale=2):
            editor = _upload(gr.ImageEditor(label="image (upload, then paint the hole)",
                                            type="numpy",
                                    sources=["upload", "clipboard"], image_mode="RGBA",
                                    brush=gr.Brush(colors=["#ffffff"], color_mode="fixed",
                                                   default_size=12),
                                            transforms=(), layers=False,
                                            height=OUTPUT_HEIGHT, elem_id="inpaint-editor",
                                            elem_classes="pixels"))
            _image_source(runs, run, editor, names[0], "inpaint-example")
    with gr.Row():
        out = gr.Image(label="original | masked | completed", format="png", interactive=False,
                       height=OUTPUT_HEIGHT // 2, elem_id="inpaint-out", elem_classes="pixels")
        info = gr.Markdown(elem_id="inpaint-info")

    def options(name: str) -> list[Any]:
        cls, _, st, _ = _options_updates(runs, name, "inpaint")
        return [cls, st]

    run.change(options, run, [label, steps])

    @_shielded
    def do(name: str, image: Any, m: str, s: float, k: str, st: float,
           progress: gr.Progress = gr.Progress(track_tqdm=True)) -> Any:
        return backend.inpaint(runs, name, image=image, mask=m, seed=s, steps=st, label=k,
                               progress=True)

    go.click(do, [run, editor, mask, seed, label, steps], [out, info], api_name="inpaint")


def _superres_tab(runs: Runs) -> None:
    names = runs.names("superres")
    gr.Markdown(_why_markdown(runs, "superres", "super-resolve"))
    if not names:
        return
    first = runs.get(names[0]).model
    opts = backend.sampling_options(first, "superres")
    with gr.Row():
        with gr.Column(scale=1):
            run = _run_dropdown(runs, "superres", "sr-run")
            original = gr.Checkbox(False, elem_id="sr-original",
                                   label="the image is a high-resolution original: downscale "
                                   "it, then score PSNR / SSIM against it")
            seed = gr.Number(0, label="seed", precision=0, minimum=0)
            steps = gr.Slider(1, backend.MAX_STEPS, value=opts["steps"] or 50, step=1,
                              label="sampling steps", visible=opts["steps"] is not None)
            go = gr.Button("Super-resolve", variant="primary", elem_id="sr-btn")
        with gr.Column(scale=2):
            image = _upload(gr.Image(label="image", type="filepath", image_mode=None,
                                     sources=["upload", "clipboard"],
                                     height=OUTPUT_HEIGHT // 2, elem_id="sr-in"))
            _image_source(runs, run, image, names[0], "sr-example")
    out = gr.Image(label="bicubic | model (| original, when scored)", format="png",
                   interactive=False,
                   height=OUTPUT_HEIGHT, elem_id="sr-out", elem_classes="pixels")
    info = gr.Markdown()
    run.change(lambda n: _options_updates(runs, n, "superres")[2], run, steps)

    @_shielded
    def do(name: str, img: Any, orig: bool, s: float, st: float,
           progress: gr.Progress = gr.Progress(track_tqdm=True)) -> Any:
        return backend.superres(runs, name, image=img, original=orig, seed=s, steps=st,
                                progress=True)

    go.click(do, [run, image, original, seed, steps], [out, info], api_name="superres")


def _translate_tab(runs: Runs) -> None:
    names = runs.names("translate")
    gr.Markdown(_why_markdown(runs, "translate", "translate"))
    if not names:
        return
    with gr.Row():
        with gr.Column(scale=1):
            run = _run_dropdown(runs, "translate", "translate-run")
            direction = gr.Radio(["AtoB", "BtoA"], value="AtoB", label="direction")
            go = gr.Button("Translate", variant="primary", elem_id="translate-btn")
        with gr.Column(scale=2):
            image = _upload(gr.Image(label="image", type="filepath", image_mode=None,
                                     sources=["upload", "clipboard"],
                                     height=OUTPUT_HEIGHT // 2, elem_id="translate-in"))
            _image_source(runs, run, image, names[0], "translate-example")
    out = gr.Image(label="input | translation", format="png", interactive=False,
                   height=OUTPUT_HEIGHT, elem_id="translate-out", elem_classes="pixels")
    info = gr.Markdown()

    @_shielded
    def do(name: str, img: Any, d: str) -> Any:
        return backend.translate(runs, name, image=img, direction=d)

    go.click(do, [run, image, direction], [out, info], api_name="translate")


def _card_tab(runs: Runs) -> tuple[gr.Dropdown, list[Any], Callable[[str], list[Any]]]:
    run = _run_dropdown(runs, None, "card-run")
    summary = gr.Markdown(elem_id="card-summary")
    with gr.Row():
        samples = gr.Image(label="newest sample grid", format="png", interactive=False,
                           height=OUTPUT_HEIGHT, elem_classes="pixels")
        config = gr.JSON(label="config (config.json)")
    curves = gr.Image(label="training curves (metrics.jsonl)", format="png", interactive=False)
    metrics = gr.Dataframe(headers=["metric", "value"], label="evaluation (eval.json; "
                           "`pixgen eval RUN` writes it)", interactive=False)

    @_shielded
    def show(name: str) -> list[Any]:
        card = backend.model_card(runs, name)
        return [card["summary"], card["samples"], card["config"], card["curves"],
                card["metrics"] or [["(not evaluated yet)", ""]]]

    outputs = [summary, samples, config, curves, metrics]
    run.change(show, run, outputs, api_name=False)
    return run, outputs, show


def build_app(runs: Runs) -> gr.Blocks:
    """The app over ``runs``; launch it with :func:`pixgen.web.serve`."""
    names = ", ".join(f"{n} ({r.model.name})" for n, r in runs.runs.items())
    # uploads and outputs in Gradio's cache are deleted hourly after an hour
    with gr.Blocks(title="pixgen", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"## pixgen\nServing {len(runs.runs)} run(s): {names}")
        with gr.Tabs():
            with gr.Tab("Sample", id="sample"):
                _sample_tab(runs)
            with gr.Tab("Interpolate", id="interpolate"):
                _interpolate_tab(runs)
            with gr.Tab("Inpaint", id="inpaint"):
                _inpaint_tab(runs)
            with gr.Tab("Super-resolve", id="superres"):
                _superres_tab(runs)
            with gr.Tab("Translate", id="translate"):
                _translate_tab(runs)
            with gr.Tab("Model card", id="card"):
                card_run, card_outputs, show = _card_tab(runs)
        demo.load(show, card_run, card_outputs, api_name=False)
    return demo
