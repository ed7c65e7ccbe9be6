"""Static figures over long texts: the views' contrast choice (linear, square root, log, and
the weight that gets the full colour), checked on the pixels drawn; and PCA token paths
labelled by what each point is."""

from __future__ import annotations

import math

import numpy as np
import pytest

import attnscope as at
from attnscope.render.static import weight_cmap

T = 2100


@pytest.fixture(scope="module")
def long_trace() -> at.Trace:
    """One head over 2,100 tokens: each row spreads evenly over its keys, with a little more
    on the token itself (the weights of a long text are all small: about 1/2,200 each)."""
    rows = np.full((T, T), 1.0, dtype=np.float64)
    rows[np.arange(T), np.arange(T)] = 100.0
    rows /= rows.sum(axis=1, keepdims=True)
    return at.Trace.from_attentions(rows.astype(np.float32), [f"t{i}" for i in range(T)])


def drawn_pixels(figure) -> np.ndarray:
    """The RGB pixels inside the heatmap's image, as the saved figure shows them."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure.set_dpi(100)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    box = figure.axes[0].images[0].get_window_extent()
    height = rgba.shape[0]
    top, bottom = int(height - box.y1) + 2, int(height - box.y0) - 2
    return rgba[top:bottom, int(box.x0) + 2:int(box.x1) - 2, :3].astype(int)


def test_log_contrast_shows_what_linear_leaves_blank(long_trace):
    blank = np.array([int(255 * c) for c in weight_cmap()(0.0)[:3]])
    coloured, mean = {}, {}
    for contrast in ("linear", "sqrt", "log"):
        figure = at.heatmap(long_trace, 0, 0, contrast=contrast)
        pixels = drawn_pixels(figure)
        distance = np.abs(pixels - blank).sum(axis=-1)  # 0: the colour of weight 0
        coloured[contrast] = float((distance > 60).mean())
        mean[contrast] = float(distance.mean())
    assert coloured["linear"] < 0.05  # nearly blank, as the issue saw it
    assert coloured["log"] > 0.9, coloured  # every weight visible
    assert mean["linear"] < mean["sqrt"] < mean["log"], mean  # square root lifts them some


def test_the_contrast_maps_weights_as_the_views_do(long_trace):
    weight = float(long_trace.attentions[0, 0, 0, 1])  # an off-diagonal weight, ~1/2103
    top = float(long_trace.attentions[0, 0].max())
    for contrast, full, expected in [
        ("linear", None, weight / top),
        ("sqrt", None, math.sqrt(weight / top)),
        ("log", None, (math.log(weight) - math.log(1e-4)) / (math.log(top) - math.log(1e-4))),
        ("log", 0.01, (math.log(weight) - math.log(1e-4)) / (math.log(0.01) - math.log(1e-4))),
        ("linear", weight, 1.0),  # the weight given as full gets the full colour
    ]:
        image = at.heatmap(long_trace, 0, 0, contrast=contrast, full=full).axes[0].images[0]
        assert float(image.get_array()[0, 1]) == weight  # the image keeps the weights
        assert float(image.norm(image.get_array())[0, 1]) == pytest.approx(expected, rel=1e-5)
    grid = at.heads_grid(long_trace, 0, contrast="log").axes[0].images[0]
    assert float(grid.norm(grid.get_array())[0, 1]) == pytest.approx(
        (math.log(weight) - math.log(1e-4)) / (0 - math.log(1e-4)), rel=1e-5)
    for bad, message in [({"contrast": "gamma"}, "contrast must be 'linear', 'sqrt' or 'log'"),
                         ({"full": 0}, "full must be a number above 0, not 0.0.")]:
        with pytest.raises(at.AttnscopeError, match=message):
            at.model_grid(long_trace, **bad)


def test_token_path_labels_name_the_embeddings_and_each_layers_output():
    rng = np.random.default_rng(0)
    att = np.full((3, 1, 4, 4), 0.25, dtype=np.float32)
    states = rng.normal(size=(4, 4, 8)).astype(np.float32)
    trace = at.Trace.from_attentions(att, ["the", "cat", "sat", "down"], hidden_states=states)
    path = at.token_path(trace, 0)
    assert path.labels == ("the@emb", "the@L0", "the@L1", "the@L2")
    assert at.pca(trace, 3).title.startswith("layer 2 output")  # the level the last label is
    assert list(path.levels) == [0, 1, 2, 3]
