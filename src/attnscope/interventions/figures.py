"""Figures of the interventions (matplotlib without pyplot; each returns an AttnFigure)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["importance_figure"]


def importance_figure(result: Any) -> Any:
    """Layers (rows) x heads (columns) of a HeadImportance, coloured by the mean importance,
    each cell showing its value (the map beside the pattern label map)."""
    from attnscope.render.static import AttnFigure

    values = result.values  # (L, H)
    layers, heads = values.shape
    fig = AttnFigure(figsize=(max(5.0, 0.75 * heads + 2.8), max(2.5, 0.4 * layers + 1.4)),
                     layout="constrained")
    ax = fig.add_subplot()
    top = float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
    image = ax.imshow(values, cmap="Reds", aspect="auto", interpolation="nearest",
                      vmin=min(0.0, float(np.nanmin(values))), vmax=top if top > 0 else 1.0)
    size = 6.5 if layers <= 12 else 5
    for layer in range(layers):
        for head in range(heads):
            value = values[layer, head]
            colour = "white" if top > 0 and value > 0.6 * top else "black"
            ax.text(head, layer, f"{value:.2g}", ha="center", va="center", fontsize=size,
                    color=colour)
    ax.set_xticks(range(heads), labels=[str(h) for h in range(heads)], fontsize=8)
    ax.set_yticks(range(layers), labels=[str(la) for la in range(layers)], fontsize=8)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    fig.colorbar(image, ax=ax, shrink=0.8, label=f"importance ({result.method})")
    ax.set_title(f"{result.model_name}: head importance by {result.method}\n"
                 f"{result.measure}, {result.per_text.shape[0]} texts", fontsize=9)
    return fig
