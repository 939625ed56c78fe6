"""The demo concept's LoRA dataset (kohya layout) and its shipped copy in resources/demo."""

from pathlib import Path

from PIL import Image

from patina.core.demo import world
from patina.core.demo.dataset import FOLDER, concept_scenes, write_concept_dataset

ROOT = Path(__file__).resolve().parents[1]


def test_written_dataset_is_kohya_layout_with_trigger_captions(tmp_path):
    folder = write_concept_dataset(tmp_path)
    assert folder == tmp_path / "img" / "20_zorbo shape"
    pngs = sorted(folder.glob("*.png"))
    assert len(pngs) == 8
    scenes = concept_scenes()
    for png, s in zip(pngs, scenes):
        cap = png.with_suffix(".txt").read_text(encoding="utf-8").strip()
        assert cap == s.caption and world.TRIGGER in cap.split()
        with Image.open(png) as im:
            assert im.size == (world.SIZE, world.SIZE)
            assert im.tobytes() == world.render(s).tobytes()
    assert len({s.colour for s in scenes}) >= 4 and len({s.background for s in scenes}) == 8
    assert not list(tmp_path.rglob("*.tmp*"))


def test_shipped_dataset_is_the_generated_one(tmp_path):
    shipped = ROOT / "resources" / "demo" / "img" / FOLDER
    fresh = write_concept_dataset(tmp_path)
    names = sorted(p.name for p in shipped.iterdir())
    assert names == sorted(p.name for p in fresh.iterdir())
    for name in names:
        if name.endswith(".txt"):
            assert (shipped / name).read_text() == (fresh / name).read_text()
        else:
            with Image.open(shipped / name) as a, Image.open(fresh / name) as b:
                assert a.tobytes() == b.tobytes()


def test_shipped_regularisation_images_are_known_shapes_without_the_trigger(tmp_path):
    from patina.core.demo.dataset import REG_FOLDER, write_reg_dataset

    shipped = ROOT / "resources" / "demo" / "reg" / REG_FOLDER
    fresh = write_reg_dataset(tmp_path)
    names = sorted(p.name for p in shipped.iterdir())
    assert names == sorted(p.name for p in fresh.iterdir()) and len(names) == 32
    for name in names:
        if name.endswith(".txt"):
            cap = (shipped / name).read_text(encoding="utf-8")
            assert cap == (fresh / name).read_text(encoding="utf-8")
            assert world.TRIGGER not in cap.split() and world.parse_caption(cap)["shape"] in world.SHAPES
        else:
            with Image.open(shipped / name) as a, Image.open(fresh / name) as b:
                assert a.tobytes() == b.tobytes()


def test_regularisation_pictures_share_the_concepts_settings_but_not_the_report_prompts():
    """The known shapes appear in every concept picture's colour and background (so colour and background do not
    come to mean the concept), never in a scene the quality report asks for."""
    from patina.core.demo.dataset import concept_scenes, reg_scenes
    from patina.core.demo.setup import QUALITY_PROMPTS

    settings = [(s.colour, s.background) for s in concept_scenes()]
    regs = reg_scenes()
    assert sorted((s.colour, s.background) for s in regs) == sorted(settings * 2)
    assert all(s.shape in world.SHAPES for s in regs)
    for c in set(settings):   # two different shapes per setting
        assert len({s.shape for s in regs if (s.colour, s.background) == c}) == 2
    report = {tuple(world.parse_caption(line.split(" --")[0]).values()) for line in QUALITY_PROMPTS.splitlines()}
    assert not report & {(s.shape, s.colour, s.background) for s in regs}
