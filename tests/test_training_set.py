"""Which painted images Train learns from besides the one chosen (_training_set; no Qt)."""

from types import SimpleNamespace

from napari_unet._training_set import TrainingSet


def _layer(name):
    return SimpleNamespace(name=name)


def test_each_image_keeps_one_annotation_layer_and_each_layer_one_image():
    a, b, c, twin = _layer("a"), _layer("b"), _layer("c"), _layer("a")  # twin: same name
    strokes_a, strokes_b, strokes_c = _layer("s"), _layer("s"), _layer("t")
    painted = TrainingSet()
    painted.remember([a], strokes_a, "YX")
    painted.remember([b], strokes_b, "TYX")
    painted.remember([twin], strokes_c, "YX")
    assert [(p.image_layers, p.axes) for p in painted.others([b], strokes_b)] == [
        ((a,), "YX"), ((twin,), "YX")]
    assert painted.others([b], strokes_b)[0].name == "image 'a'"
    # a new annotation layer for a replaces its old one
    new_a = _layer("s2")
    painted.remember([a], new_a, "YX")
    assert [p.labels for p in painted.others([c], None)] == [strokes_b, strokes_c, new_a]
    # an annotation layer chosen for another image leaves the first
    painted.remember([c], strokes_b, "YX")
    assert [p.image_layers for p in painted.others([c], strokes_b)] == [(twin,), (a,)]
    # strokes painted for another image are not this one's "other image" either
    assert [p.image_layers for p in painted.others([a], strokes_c)] == [(c,)]
    # closing an image or its strokes leaves its pairing out
    painted.forget_layer(twin)
    painted.forget_layer(new_a)
    assert len(painted) == 1 and painted.others([b], None)[0].image_layers == (c,)
    assert painted.labels_for([c]) is strokes_b and painted.labels_for([twin]) is None
    # several layers as channels are one image
    red, green = _layer("red"), _layer("green")
    painted.remember([red, green], strokes_a, "CYX")
    assert painted.others([red], None)[-1].image_layers == (red, green)
    assert painted.others([red, green], None)[-1].image_layers == (c,)
