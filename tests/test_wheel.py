"""The installable package: a wheel built from the repository holds patina.core, patina.gui and
patina.resources, and works installed outside the source tree (not editable): presets, a screenshot of the
window, and a tiny training run."""

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=600)
    if r.returncode and "No module named" in r.stderr and "setuptools" in r.stderr:
        pytest.skip("setuptools is not installed in the test environment")
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = out.glob("patina-*.whl")
    return whl


def test_wheel_holds_one_patina_package_with_its_resources(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"patina"}, tops  # no generic top-level `core`/`gui` in site-packages
    for needed in ("patina/core/__init__.py", "patina/core/train/engine.py", "patina/gui/launcher.py",
                   "patina/resources/tokenizers/clip/vocab.json", "patina/resources/model_configs/sd1/unet/config.json",
                   "patina/resources/model_configs/sdxl/model_index.json", "patina/resources/presets/sd15-character.json"):
        assert needed in names, needed
    # every package folder of the source tree is in the wheel
    for top in ("core", "gui"):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.relative_to(ROOT).as_posix()
            assert f"patina/{rel}" in names, rel


def test_installed_wheel_runs_outside_the_source_tree(wheel, tmp_path):
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    # dependencies come from this test environment (nothing is downloaded); Patina itself only from the wheel
    deps = [p for p in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}]
    (site / "zz_test_dependencies.pth").write_text("\n".join(deps) + "\n", encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                        str(wheel)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    bindir = py.parent
    patina = bindir / ("patina.exe" if os.name == "nt" else "patina")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    work = tmp_path / "elsewhere"
    work.mkdir()

    def run(*args, timeout=600):
        return subprocess.run([str(patina), *args], cwd=work, env=env, capture_output=True, text=True,
                              timeout=timeout)

    where = subprocess.run([str(py), "-c", "import patina.core, patina.gui; print(patina.core.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout  # the installed copy, not the repo

    r = run("config", "presets")
    assert r.returncode == 0 and "SD1.5 character/object" in r.stdout and "built-in" in r.stdout, r.stderr

    shot = work / "window.png"
    r = run("--screenshot", str(shot), timeout=300)
    assert r.returncode == 0 and shot.stat().st_size > 10_000, r.stderr

    # a tiny training run: tiny model, a few images, the shipped tokenizer and configs from the wheel
    script = (
        "import sys, json; from pathlib import Path\n"
        "from PIL import Image\n"
        "from patina.core.models.tiny import save_tiny_diffusers\n"
        "from patina.core.config.schema import defaults\n"
        "root = Path(sys.argv[1])\n"
        "model = save_tiny_diffusers(root / 'model', 'sd1')\n"
        "img = root / 'img' / '2_sks toy'; img.mkdir(parents=True)\n"
        "for i in range(4):\n"
        "    Image.new('RGB', (64, 64), (60 * i, 100, 200)).save(img / f'{i}.png')\n"
        "cfg = defaults(); cfg.update(pretrained_model_name_or_path=str(model), train_data_dir=str(root / 'img'),\n"
        "    output_dir=str(root / 'out'), output_name='tiny', max_resolution='64,64', min_bucket_reso=64,\n"
        "    max_bucket_reso=128, bucket_reso_steps=64, optimizer='AdamW', mixed_precision='no', network_dim=4,\n"
        "    network_alpha=4.0, train_batch_size=2, epoch=1, save_every_n_epochs=0, xformers='sdpa', sample_prompts='')\n"
        "(root / 'cfg.json').write_text(json.dumps(cfg))\n")
    r = subprocess.run([str(py), "-c", script, str(work)], cwd=work, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run("train", str(work / "cfg.json"))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert (work / "out" / "tiny.safetensors").stat().st_size > 1000
