"""`pixgen serve` over HTTP, without a browser: it listens on loopback only, refuses path
traversal (plain, encoded, double-encoded, absolute), oversized uploads, runs that were not
named at start-up and server files passed as inputs, and warns when exposed."""

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid

import numpy as np
import pytest
from _serve_helpers import need, start_server

TRAVERSALS = [
    "../../../../etc/passwd",
    "..%2f..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "..%5c..%5c..%5cetc%5cpasswd",
    "/etc/passwd",
    "//etc/passwd",
    "%2fetc%2fpasswd",
    "/proc/self/environ",
]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def post(url: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def upload(url: str, name: str, payload: bytes) -> tuple[int, bytes]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
            f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode() \
        + payload + f"\r\n--{boundary}--\r\n".encode()
    return post(url + "/gradio_api/upload", body, f"multipart/form-data; boundary={boundary}")


def call(url: str, api: str, data: list) -> tuple[str, object]:
    """Call an event of the app through Gradio's HTTP API: ("complete" or "error", data)."""
    status, body = post(f"{url}/gradio_api/call/{api}", json.dumps({"data": data}).encode(),
                        "application/json")
    assert status == 200, body
    event_id = json.loads(body)["event_id"]
    status, stream = get(f"{url}/gradio_api/call/{api}/{event_id}")
    event, payload = None, None
    for line in stream.decode().splitlines():
        if line.startswith("event: "):
            event = line[7:].strip()
        elif line.startswith("data: ") and event in ("complete", "error"):
            payload = json.loads(line[6:])
    return event, payload


def test_listens_on_loopback_only_with_analytics_off(server):
    url, _, lines = server
    assert urllib.parse.urlparse(url).hostname == "127.0.0.1"
    assert not any("warning" in line.lower() for line in lines)
    status, body = get(url + "/config")
    config = json.loads(body)
    assert status == 200 and config["analytics_enabled"] is False
    assert not config.get("mcp_server")


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_is_refused(server, path):
    url, runs, _ = server
    for route in ("/gradio_api/file=", "/file=", "/static/", "/assets/"):
        status, body = get(url + route + path)
        assert status in (403, 404), (route, path, status)
        assert b"root:" not in body and b"PATH=" not in body


def test_run_files_and_cache_escapes_are_refused(server):
    url, runs, _ = server
    status, body = upload(url, "x.png", b"\x89PNG\r\n\x1a\n")
    assert status == 200
    cached = json.loads(body)[0]  # the upload's path in the server's private cache
    assert get(f"{url}/gradio_api/file={cached}")[0] == 200  # one's own upload: served
    for path in (str(runs["vae"] / "model.safetensors"), str(runs["vae"] / "config.yaml"),
                 cached + "/../../../../etc/passwd",
                 urllib.parse.quote(cached.rsplit("/", 2)[0] + "/../../etc/passwd", safe="")):
        status, body = get(f"{url}/gradio_api/file={path}")
        assert status in (403, 404), path
        assert b"root:" not in body and not body.startswith(b"\x00")


def test_oversized_upload_is_refused(server):
    url, _, _ = server  # started with --max-upload-mb 1
    status, body = upload(url, "big.png", b"\0" * (1024 * 1024 + 10))
    assert status == 413, body
    assert upload(url, "small.png", b"\0" * 1000)[0] == 200


def test_only_the_runs_named_at_start_can_be_used(server):
    url, runs, _ = server
    event, data = call(url, "sample", ["vae-digits", 4, 0, "any", 1.0, 50, 2.0])
    assert event == "complete", data
    status, body = upload(url, "model.safetensors", (runs["vae"] / "model.safetensors")
                          .read_bytes())
    uploaded = json.loads(body)[0]
    for name in ("../vae-digits", str(runs["vae"]), str(runs["vae"] / "model.safetensors"),
                 uploaded, "%2e%2e%2fvae-digits"):
        event, data = call(url, "sample", [name, 4, 0, "any", 1.0, 50, 2.0])
        assert event == "error", name
        assert "not in the list of choices" in data["error"]


def test_server_files_cannot_be_passed_as_images(server):
    url, runs, _ = server
    for path in (str(runs["vae"] / "model.safetensors"), "/etc/passwd"):
        image = {"path": path, "meta": {"_type": "gradio.FileData"}}
        event, data = call(url, "translate", ["cyclegan-shapes", image, "AtoB"])
        assert event == "error", path
        assert "cannot" in data["error"].lower() or "blocked" in data["error"]


def test_request_values_are_bounded(server):
    url, _, _ = server
    event, data = call(url, "sample", ["vae-digits", 100000, 0, "any", 1.0, 50, 2.0])
    assert event == "error" and "maximum" in data["error"]


def test_non_loopback_host_warns(tiny_runs, tmp_path, capsys):
    need("gradio")
    from pixgen.cli import main

    proc, url, lines = start_server([tiny_runs["vae"]], "--host", "0.0.0.0",
                                    env={"TMPDIR": str(tmp_path)})
    assert list(tmp_path.glob("pixgen-web-*"))  # its uploads folder
    # a second server on its port: one line naming --port, not Gradio's traceback
    port = urllib.parse.urlparse(url).port
    assert main(["serve", str(tiny_runs["vae"]), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1, port {port}" in err and "--port" in err
    assert err.count("\n") == 1
    proc.terminate()  # SIGTERM: stopped as Ctrl-C stops it, its uploads folder removed
    assert proc.wait(timeout=20) == 0
    text = "\n".join(lines)
    assert "warning: --host 0.0.0.0 makes this app reachable from other machines" in text
    assert not list(tmp_path.glob("pixgen-web-*"))


def test_serve_refuses_bad_flags_and_missing_runs(tmp_path, tiny_runs, capsys):
    from pixgen.cli import main

    assert main(["serve", str(tiny_runs["vae"]), "--port", "70000"]) == 2
    assert "--port must be 0-65535, not 70000" in capsys.readouterr().err
    assert main(["serve", str(tiny_runs["vae"]), "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb must be more than 0" in capsys.readouterr().err
    need("gradio")
    assert main(["serve", str(tmp_path / "no-such-run")]) == 2
    err = capsys.readouterr().err
    assert "no-such-run" in err and err.count("\n") == 1
    (tmp_path / "not-a-run").mkdir()
    assert main(["serve", str(tmp_path / "not-a-run")]) == 2
    assert "not-a-run" in capsys.readouterr().err


def test_decompression_bomb_upload_is_refused(server, tmp_path):
    """A small PNG that declares 5000 x 5000 pixels (over the 4096 x 4096 limit) is refused
    when it is used; a normal image is not."""
    from PIL import Image

    url, _, _ = server
    for side, ok in ((5000, False), (64, True)):
        Image.new("L", (side, side)).save(tmp_path / "x.png")
        payload = (tmp_path / "x.png").read_bytes()
        assert len(payload) < 1024 * 1024  # under the upload limit: only the pixels are many
        status, body = upload(url, f"{side}.png", payload)
        assert status == 200
        image = {"path": json.loads(body)[0], "meta": {"_type": "gradio.FileData"}}
        event, data = call(url, "translate", ["cyclegan-shapes", image, "AtoB"])
        assert (event == "complete") == ok, (side, data)
        if not ok:
            assert "cannot read the uploaded image: it has too many pixels (over 16,777,216)" \
                in data["error"]


def test_uploads_reach_pixgen_as_files(server, tmp_path):
    """Gradio hands uploads over undecoded: a transparent PNG is white and a palette GIF its
    colours, as in training; a corrupt file is one line without the server's paths."""
    from PIL import Image

    url, _, _ = server
    Image.new("RGBA", (16, 16), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    pal = Image.new("P", (16, 16), 1)
    pal.putpalette([0, 0, 0, 255, 255, 0] + [0] * 762)
    pal.save(tmp_path / "yellow.gif")
    for name, want in (("clear.png", [255] * 3), ("yellow.gif", [255, 255, 0])):
        status, body = upload(url, name, (tmp_path / name).read_bytes())
        image = {"path": json.loads(body)[0], "meta": {"_type": "gradio.FileData"}}
        event, data = call(url, "translate", ["cyclegan-shapes", image, "AtoB"])
        assert event == "complete", data
        status, png = get(data[0]["url"])
        import io

        strip = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        assert strip[4, 4].tolist() == want, name  # the input panel, inside the padding
    status, body = upload(url, "bad.png", b"\x89PNG\r\n\x1a\nnot a png")
    image = {"path": json.loads(body)[0], "meta": {"_type": "gradio.FileData"}}
    event, data = call(url, "translate", ["cyclegan-shapes", image, "AtoB"])
    assert event == "error"
    assert data["error"] == ("cannot read the uploaded image: it is not an image file that "
                             "can be read")
