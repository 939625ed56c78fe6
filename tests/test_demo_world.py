"""The demo's toy world: deterministic, captions that say what is drawn, a concept absent from pretraining."""

import re

import numpy as np
import pytest

from patina.core.demo import world as w

_CAPTION = re.compile(r"^an? (\w+) (\w+(?: shape)?) on a ([\w ]+) background$")


def _parse(caption: str) -> dict:
    m = _CAPTION.match(caption)
    assert m, caption
    shape = m[2].replace(f"{w.TRIGGER} shape", w.CONCEPT)
    return {"shape": shape, "colour": m[1], "background": m[3]}


def test_scenes_are_deterministic_from_the_seed():
    a = [w.sample(3, i) for i in range(6)]
    b = [w.sample(3, i) for i in range(6)]
    for (ia, ca, la), (ib, cb, lb) in zip(a, b):
        assert ca == cb and la == lb
        assert ia.tobytes() == ib.tobytes()
        assert ia.size == (w.SIZE, w.SIZE) and ia.mode == "RGB"
    other = [w.sample(4, i) for i in range(6)]
    assert [c for _, c, _ in other] != [c for _, c, _ in a]


def test_captions_match_labels_and_pixels():
    for i in range(60):
        s = w.scene_at(0, i)
        assert _parse(s.caption) == s.labels
        img = np.asarray(w.render(s)).astype(int)
        # The shape's own colour is drawn at its centre (every shape covers its centre) ...
        cy, cx = int(round(s.cy)), int(round(s.cx))
        assert np.abs(img[cy, cx] - np.array(w.COLOURS[s.colour])).max() <= 12, s
        # ... and a corner shows the background.
        corner = img[0, 0]
        if s.background in w._PLAIN:
            assert np.abs(corner - np.array(w._PLAIN[s.background])).max() <= 2
        elif s.background.startswith("striped "):
            assert np.abs(corner - np.array(w._STRIPED[s.background[8:]])).max() <= 2
        else:
            assert np.abs(corner - np.array(w.SKY)).max() <= 2
            assert np.abs(img[-1, 0] - np.array(w.GRASS)).max() <= 2


def test_hundreds_of_distinct_captions_with_unseen_ones_held_out():
    captions = {w.caption_for(*c) for c in w.combos()}
    assert len(captions) >= 300
    seen = {w.scene_at(0, i).caption for i in range(4000)}
    held = {w.caption_for(*c) for c in w.heldout_combos()}
    assert len(seen) > 250 and held and not seen & held
    assert {w.scene_at(0, i).shape for i in range(200)} == set(w.SHAPES)
    assert {w.scene_at(0, i).background for i in range(400)} == set(w.BACKGROUNDS)


def test_shape_colour_never_vanishes_into_the_background():
    for shape, colour, background in w.combos():
        assert not (background.endswith(colour) and background != w.SKY_AND_GRASS)


def test_trigger_word_and_concept_are_absent_from_pretraining():
    assert w.TRIGGER not in w.pretraining_words()
    assert w.CONCEPT not in w.SHAPES
    for i in range(2000):
        s = w.scene_at(0, i)
        assert s.shape != w.CONCEPT and w.TRIGGER not in s.caption
    concept = [w.concept_scene_at(0, i) for i in range(40)]
    assert all(s.shape == w.CONCEPT and w.TRIGGER in s.caption for s in concept)
    assert len({s.colour for s in concept}) >= 4 and len({s.background for s in concept}) >= 5
    assert all(_parse(s.caption) == s.labels for s in concept)


def test_concept_looks_different_from_a_circle():
    base = w.make_scene(__import__("random").Random(1), "circle", "red", "white")
    circle = np.asarray(w.render(base))
    zorbo = np.asarray(w.render(w.Scene(w.CONCEPT, "red", "white", base.radius, base.cx, base.cy, base.variant)))
    assert (np.abs(circle.astype(int) - zorbo.astype(int)).sum(axis=2) > 60).mean() > 0.05


@pytest.mark.parametrize("i", range(4))
def test_none_scenes_have_no_shape(i):
    s = w.none_scene_at(0, i)
    assert s.shape == w.NONE
    w.render(s)  # draws


def test_vae_compositions_are_deterministic_and_varied():
    a = [w.composition_at(1, i).tobytes() for i in range(6)]
    assert a == [w.composition_at(1, i).tobytes() for i in range(6)]
    assert len(set(a)) == 6
    assert w.composition_at(1, 0).size == (w.SIZE, w.SIZE)
