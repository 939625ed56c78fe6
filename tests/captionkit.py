"""Tiny stand-ins for the captioning models, built in code and saved the way the published ones are (a BLIP
folder from ``save_pretrained``; a WD14 ``model.onnx`` exported from a small torch module with its
``selected_tags.csv``), and a guard that fails a test on any network connection.

The tagger is deterministic: its scores are the picture's mean colours, so a test knows which tags pass.
"""

from __future__ import annotations

import csv
import socket
import warnings
from pathlib import Path

import pytest

TAGGER_SIDE = 16
# (name, category) in selected_tags.csv order; ratings first as in the published lists
TAGGER_TAGS = [("general", 9), ("sensitive", 9), ("questionable", 9), ("explicit", 9),
               ("bright", 0), ("^_^", 0), ("red_theme", 0), ("green_theme", 0), ("blue_theme", 0),
               ("red_knight_(hero)", 4)]
BLIP_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "cat", "on", "grass", "red", "blue",
              "photo", "of", "the", "sitting"]


def save_tiny_tagger(folder: Path, fixed_batch: bool = False) -> Path:
    """model.onnx + selected_tags.csv. Scores (BGR input, 0–255): the ratings 0.6/0.2/0.1/0.05; bright = mean
    of all; ^_^ = 0.9; red/green/blue_theme = the mean of that channel; red_knight_(hero) = 0.95 × red."""
    import torch

    class Tagger(torch.nn.Module):
        def forward(self, x):                      # x: N, H, W, 3 (B, G, R), 0..255
            m = x.mean(dim=(1, 2)) / 255.0
            b, g, r = m[:, 0], m[:, 1], m[:, 2]
            one = torch.ones_like(r)
            return torch.stack([0.6 * one, 0.2 * one, 0.1 * one, 0.05 * one, (r + g + b) / 3, 0.9 * one,
                                r, g, b, 0.95 * r], dim=1)

    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the TorchScript exporter is deprecated; it needs no extra package
        torch.onnx.export(Tagger(), (torch.zeros(1, TAGGER_SIDE, TAGGER_SIDE, 3),), str(folder / "model.onnx"),
                          dynamo=False, input_names=["input_1:0"], output_names=["predictions_sigmoid"],
                          dynamic_axes=None if fixed_batch else {"input_1:0": {0: "batch"}})
    with (folder / "selected_tags.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["tag_id", "name", "category", "count"])
        for i, (name, cat) in enumerate(TAGGER_TAGS):
            w.writerow([1000 + i, name, cat, 100 - i])
    return folder


def save_tiny_blip(folder: Path, seed: int = 0) -> Path:
    """A random BLIP (two tiny towers) with its processor and a 16-word BERT tokenizer."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, \
        BlipProcessor

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder.parent / f"{folder.name}-vocab.txt"
    vocab.write_text("\n".join(BLIP_WORDS) + "\n", encoding="utf-8")
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                              tokenizer=BertTokenizer(str(vocab)))
    config = BlipConfig(
        text_config=dict(vocab_size=len(BLIP_WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, bos_token_id=2, sep_token_id=3,
                         pad_token_id=0, eos_token_id=3),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def save_image(path: Path, color=(255, 0, 0), size=(32, 32), mode="RGB") -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


_LOCAL = ("127.0.0.1", "::1", "localhost", "0.0.0.0")


@pytest.fixture
def network_attempts(monkeypatch):
    """Every connection to a non-local address fails, and the test fails at its end unless it cleared the
    list itself (a test that expects a blocked attempt asserts it, then clears it)."""
    attempts: list = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def blocked(address) -> bool:
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and host not in _LOCAL:
            attempts.append(address)
            return True
        return False

    def connect(self, address):
        if blocked(address):
            raise OSError(f"network access is not allowed in tests: {address}")
        return real_connect(self, address)

    def connect_ex(self, address):
        if blocked(address):
            raise OSError(f"network access is not allowed in tests: {address}")
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if blocked((host, 0)):
            raise socket.gaierror(f"name lookup is not allowed in tests: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts
    assert not attempts, f"the test tried to reach the network: {attempts}"


class LocalHub:
    """A stand-in for huggingface.co on 127.0.0.1: ``HEAD``/``GET /<repo>/resolve/<rev>/<file>`` serve the files
    of *source* with the headers the hub client reads (commit, ETag, size), ``Range`` requests resume, and
    anything else is 404. With *cut_after*, the first download of each file breaks off after that many bytes
    (a dropped connection). :attr:`requests` lists ``(method, path, range)``."""

    COMMIT = "c0ffee" * 6 + "c0ff"

    def __init__(self, source: Path, cut_after: int = 0):
        import hashlib
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        hub = self
        self.requests: list = []
        cut: set = set()

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, body: bool) -> None:
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                parts = self.path.split("?")[0].strip("/").split("/")
                f = source / parts[-1]
                if "resolve" not in parts or not f.is_file():
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = f.read_bytes()
                start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", hub.COMMIT)
                self.send_header("ETag", '"%s"' % hashlib.sha256(data).hexdigest())
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if body and cut_after and f.name not in cut and len(data) > cut_after:
                    cut.add(f.name)
                    self.wfile.write(data[:cut_after])
                    self.close_connection = True
                elif body:
                    self.wfile.write(data[start:])

            def do_HEAD(self):  # noqa: N802
                self._serve(body=False)

            def do_GET(self):  # noqa: N802
                self._serve(body=True)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def use(self, monkeypatch, cache: Path) -> None:
        """Point huggingface_hub at this server and at *cache*, with downloads allowed."""
        from huggingface_hub import constants

        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", self.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", self.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
