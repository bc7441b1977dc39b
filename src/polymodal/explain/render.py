"""Pictures and the HTML page of an explanation: PNGs drawn with Pillow (a core dependency, no matplotlib) and
one self-contained HTML page (PNGs inlined as base64, each also linked to its file). Every file is written
atomically (temp file in the same directory + rename), so a crash never leaves a half-written picture.

Colours: signed attributions use a diverging blue–white–red map symmetric around 0 (red = pushes the target
logit up, blue = down), scaled by the largest |value|; non-negative maps (attention, rollout, |IG|, log-mel) use
viridis (anchors from matplotlib's viridis).
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np
from PIL import Image, ImageDraw

from ..files import atomic_write_bytes

PANEL = 224  # target side of one panel in pixels
_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=float)
_DIVERGING = np.array([[59, 76, 192], [255, 255, 255], [180, 4, 38]], dtype=float)


# ---------------------------------------------------------------------------------------------- files



def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- colour maps


def _interpolate(values: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """values in [0, 1] [...] → RGB uint8 [..., 3] by piecewise-linear interpolation between anchors."""
    values = np.clip(np.nan_to_num(values.astype(float)), 0.0, 1.0) * (len(anchors) - 1)
    low = np.minimum(values.astype(int), len(anchors) - 2)
    frac = (values - low)[..., None]
    return np.round(anchors[low] * (1 - frac) + anchors[low + 1] * frac).astype(np.uint8)


def sequential_rgb(values: np.ndarray) -> np.ndarray:
    """Non-negative map [...] → viridis RGB [..., 3], scaled min..max."""
    values = np.asarray(values, dtype=float)
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    return _interpolate((values - low) / (high - low) if high > low else np.zeros_like(values), _VIRIDIS)


def diverging_rgb(scores: np.ndarray) -> np.ndarray:
    """Signed scores [...] → blue–white–red RGB [..., 3]; 0 is white, ±max|score| the ends."""
    scores = np.asarray(scores, dtype=float)
    scale = float(np.nanmax(np.abs(scores))) if scores.size else 0.0
    return _interpolate(0.5 + 0.5 * scores / scale if scale > 0 else np.full_like(scores, 0.5), _DIVERGING)


def diverging_css(score: float, scale: float) -> str:
    r, g, b = _interpolate(np.array([0.5 + 0.5 * score / scale if scale > 0 else 0.5]), _DIVERGING)[0]
    return f"#{r:02x}{g:02x}{b:02x}"


# ---------------------------------------------------------------------------------------------- panels


def _panel(rgb: np.ndarray, size: tuple[int, int] | None = None) -> Image.Image:
    """RGB uint8 [h, w, 3] → an image scaled (nearest: pixels stay visible) to ``size`` or to about PANEL."""
    image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    if size is None:
        scale = max(1, PANEL // max(image.width, image.height))
        size = (image.width * scale, image.height * scale)
    return image.resize(size, Image.NEAREST)


def titled(image: Image.Image, title: str) -> Image.Image:
    out = Image.new("RGB", (image.width, image.height + 16), "white")
    out.paste(image, (0, 16))
    ImageDraw.Draw(out).text((2, 2), title, fill="black")
    return out


def row(panels: list[Image.Image], gap: int = 8) -> Image.Image:
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    out = Image.new("RGB", (width, max(p.height for p in panels)), "white")
    x = 0
    for panel in panels:
        out.paste(panel, (x, 0))
        x += panel.width + gap
    return out


def column(panels: list[Image.Image], gap: int = 8) -> Image.Image:
    height = sum(p.height for p in panels) + gap * (len(panels) - 1)
    out = Image.new("RGB", (max(p.width for p in panels), height), "white")
    y = 0
    for panel in panels:
        out.paste(panel, (0, y))
        y += panel.height + gap
    return out


def _grey_rgb(image01: np.ndarray) -> np.ndarray:
    """[H, W] or [H, W, C] in [0, 1] → RGB uint8 [H, W, 3]."""
    image = np.clip(np.asarray(image01, dtype=float), 0.0, 1.0)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.round(image * 255).astype(np.uint8)


def _overlay(image01: np.ndarray, heat: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Blend the input (grey / RGB) with a viridis heat map of the same [H, W]."""
    base = _grey_rgb(image01).astype(float)
    colour = sequential_rgb(heat).astype(float)
    return np.round((1 - alpha) * base + alpha * colour).astype(np.uint8)


def _upsample(grid: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """[g, g] → [H, W] by nearest repetition (patch maps stay patch-shaped)."""
    rows = np.minimum((np.arange(shape[0]) * grid.shape[0]) // shape[0], grid.shape[0] - 1)
    cols = np.minimum((np.arange(shape[1]) * grid.shape[1]) // shape[1], grid.shape[1] - 1)
    return grid[np.ix_(rows, cols)]


def image_attribution_figure(image01: np.ndarray, scores: np.ndarray) -> Image.Image:
    """input [H, W(, C)] in [0, 1] + IG [H, W] (summed over channels) → input | signed IG | |IG| overlay."""
    return row([
        titled(_panel(_grey_rgb(image01)), "input"),
        titled(_panel(diverging_rgb(scores)), "IG (red +, blue -)"),
        titled(_panel(_overlay(image01, np.abs(scores))), "|IG| over input"),
    ])


def rollout_figure(image01: np.ndarray, patch_map: np.ndarray) -> Image.Image:
    """input [H, W(, C)] + rollout [g, g] over the patch grid → input | rollout | overlay."""
    heat = _upsample(np.asarray(patch_map, dtype=float), np.asarray(image01).shape[:2])
    return row([
        titled(_panel(_grey_rgb(image01)), "input"),
        titled(_panel(sequential_rgb(patch_map)), "CLS attention rollout"),
        titled(_panel(_overlay(image01, heat)), "rollout over input"),
    ])


def spectrogram_figure(features: np.ndarray, scores: np.ndarray) -> Image.Image:
    """log-mel [n_mels, T] + IG [n_mels, T] (real frames only) → two time-frequency panels, low mels at the
    bottom, time to the right."""
    features, scores = np.asarray(features)[::-1], np.asarray(scores)[::-1]
    width = max(PANEL * 2, features.shape[1] * 2)
    height = max(PANEL // 2, features.shape[0] * 3)
    return column([
        titled(_panel(sequential_rgb(features), (width, height)), "log-mel (time ->, mel up)"),
        titled(_panel(diverging_rgb(scores), (width, height)), "IG (red +, blue -)"),
    ])


def waveform_figure(scores: np.ndarray, bins: int = 200) -> Image.Image:
    """Raw-waveform IG [S] → a time strip of IG summed per bin (signed)."""
    scores = np.asarray(scores, dtype=float)
    edges = np.linspace(0, len(scores), min(bins, max(len(scores), 1)) + 1).astype(int)
    sums = np.array([scores[a:b].sum() for a, b in zip(edges[:-1], edges[1:])])[None, :]
    return titled(_panel(diverging_rgb(sums), (PANEL * 2, 40)), "IG over time (red +, blue -)")


def matrix_figure(weights: np.ndarray, rows: list[tuple[str, int]], cols: list[tuple[str, int]]) -> Image.Image:
    """Attention [N_q, N_k] (head mean) → heat map with lines between the modality segments (label, length)."""
    weights = np.asarray(weights, dtype=float)
    cell = max(2, min(16, 320 // max(weights.shape)))
    body = _panel(sequential_rgb(weights), (weights.shape[1] * cell, weights.shape[0] * cell))
    margin = 70
    out = Image.new("RGB", (body.width + margin, body.height + margin), "white")
    out.paste(body, (margin, margin))
    draw = ImageDraw.Draw(out)
    for segments, vertical in ((cols, True), (rows, False)):
        start = 0
        for number, (label, length) in enumerate(segments):
            edge = margin + (start + length) * cell
            middle = margin + int((start + length / 2) * cell)
            if vertical:  # labels centred on their segment, on two alternating lines so short ones never collide
                draw.text((max(margin, middle - 3 * len(label)), margin - 28 + 14 * (number % 2)), label, fill="black")
                draw.line([(edge, margin), (edge, out.height)], fill="white", width=1)
            else:
                draw.text((2 + 30 * (number % 2) * (length * cell < 12), middle - 5), label[:11], fill="black")
                draw.line([(margin, edge), (out.width, edge)], fill="white", width=1)
            start += length
    draw.text((margin, 2), "keys ->  (rows: queries)", fill="black")
    return out


# ---------------------------------------------------------------------------------------------- HTML


def figure_html(data: bytes, filename: str, caption: str) -> str:
    """One <figure>: the PNG inlined as base64 (the page stands alone) plus a link to its file."""
    encoded = base64.b64encode(data).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{encoded}" alt="{html.escape(filename)}">'
        f'<figcaption>{html.escape(caption)} — <a href="{html.escape(filename)}">{html.escape(filename)}</a>'
        "</figcaption></figure>"
    )


def tokens_html(tokens: list[str], scores: list[float], valid: list[bool]) -> str:
    """Tokens as coloured spans (diverging by score, scaled by the largest |score|), score in the tooltip."""
    shown = [(t, s) for t, s, v in zip(tokens, scores, valid) if v]
    scale = max((abs(s) for _, s in shown), default=0.0)
    spans = [
        f'<span class="tok" style="background:{diverging_css(s, scale)}" title="{s:+.4f}">{html.escape(t)}</span>'
        for t, s in shown
    ]
    return '<p class="tokens">' + " ".join(spans) + "</p>"


def table_html(header: list[str], rows: list[list[object]]) -> str:
    def cell(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
figure{margin:1em 0} figcaption{font-size:.85em;color:#555} img{max-width:100%;image-rendering:pixelated}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
.tok{padding:.1em .25em;border-radius:3px;margin:.1em;display:inline-block;font-family:monospace}
.note{font-size:.9em;color:#555}
"""


def page_html(title: str, sections: list[tuple[str, str]]) -> str:
    """A whole self-contained page: (heading, HTML body) sections, no external resource."""
    parts = [f"<h2>{html.escape(heading)}</h2>\n{body}" for heading, body in sections]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


__all__ = [
    "atomic_write_bytes", "png_bytes", "titled", "row", "column", "image_attribution_figure", "rollout_figure", "spectrogram_figure",
    "waveform_figure", "matrix_figure", "figure_html", "tokens_html", "table_html", "page_html",
]
