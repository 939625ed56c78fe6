"""Test settings shared by the whole suite: no network, no display, no user folders touched."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One thread per test process: the suite runs in several processes (pytest -n auto), and torch's threads
# spin-wait on a busy machine (several processes × several threads each are many times slower).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Each test gets its own per-user config and cache folders."""
    base = tmp_path_factory.mktemp("userdirs")
    monkeypatch.setenv("PATINA_CONFIG_DIR", str(base / "config"))
    monkeypatch.setenv("PATINA_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("PATINA_DATA_DIR", str(base / "data"))
