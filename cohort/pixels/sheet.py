"""A contact sheet of a cohort's slides: one PNG, and one self-contained HTML page.

Both use the same geometry (:class:`Layout`): tile *i* has its image centred in a
``size`` x ``size`` box at the same pixel position in the PNG and in the page, so a
browser's screenshot of the page can be compared with the PNG. Each tile is labelled
with collection, patient, organ, stain and objective power (from ``sm_index`` where the
catalog has it) and links to the slide in the IDC Slim viewer (series from IDC's own
endpoints) or to the series' URL on the archive (custom endpoints).
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..endpoints import EndpointKind
from ..errors import CohortError, PixelError
from .thumbnails import DEFAULT_SIZE, Thumbnail, fetch_thumbnails, require_pillow

if TYPE_CHECKING:
    from PIL import Image

    from ..cohort import Cohort
    from .client import RoutedClient

SLIM_VIEWER = "https://viewer.imaging.datacommons.cancer.gov/slim/studies/{study}/series/{series}"
LABEL_HEIGHT = 44
GAP = 12
BACKGROUND = (255, 255, 255)

_LABELS_SQL = """
SELECT c.SeriesInstanceUID, c.StudyInstanceUID, c.collection_id, c.PatientID{sm}
FROM cohort c {join}
WHERE c.Modality = 'SM'
ORDER BY c.collection_id, c.PatientID, c.SeriesInstanceUID
"""
_SM_COLUMNS = (", s.primaryAnatomicStructure_CodeMeaning AS organ, "
               "s.staining_usingSubstance_CodeMeaning AS stains, "
               "s.ObjectiveLensPower AS objective_power")


@dataclass(frozen=True)
class Tile:
    """One slide on the sheet: its thumbnail, labels and link."""

    thumbnail: Thumbnail
    collection: str | None = None
    patient: str | None = None
    organ: str | None = None
    stain: str | None = None
    objective_power: float | None = None
    link: str | None = None

    @property
    def lines(self) -> tuple[str, str]:
        power = f"{self.objective_power:g}x" if self.objective_power else None
        first = " · ".join(v for v in (self.collection, self.patient) if v)
        second = " · ".join(v for v in (self.organ, self.stain, power) if v)
        if self.thumbnail.error:
            second = "no thumbnail: " + self.thumbnail.error
        return first, second


@dataclass(frozen=True)
class Layout:
    """Where tile *i* and its image go (pixels), the same in the PNG and the HTML page."""

    count: int
    size: int = DEFAULT_SIZE
    columns: int = 6

    @property
    def width(self) -> int:
        return GAP + min(self.columns, max(1, self.count)) * (self.size + GAP)

    @property
    def height(self) -> int:
        rows = max(1, -(-self.count // self.columns))
        return GAP + rows * (self.size + LABEL_HEIGHT + GAP)

    def box(self, i: int) -> tuple[int, int]:
        """Top-left corner of tile ``i``'s image box."""
        return GAP + (i % self.columns) * (self.size + GAP), GAP + (i // self.columns) * (self.size + LABEL_HEIGHT + GAP)

    def image_at(self, i: int, width: int, height: int) -> tuple[int, int]:
        """Top-left corner of an image of ``width`` x ``height`` centred in tile ``i``'s box."""
        x, y = self.box(i)
        return x + (self.size - width) // 2, y + (self.size - height) // 2


@dataclass(frozen=True)
class ContactSheet:
    """Thumbnails of a cohort's slides, labelled; ``to_png``, ``to_html``, and a notebook display."""

    tiles: tuple[Tile, ...] = field(repr=False)
    size: int = DEFAULT_SIZE
    columns: int = 6
    title: str = "slides"

    @property
    def layout(self) -> Layout:
        return Layout(len(self.tiles), self.size, self.columns)

    @property
    def failed(self) -> list[Thumbnail]:
        return [t.thumbnail for t in self.tiles if t.thumbnail.error]

    def __repr__(self) -> str:
        return f"<ContactSheet {self.title}: {len(self.tiles)} slides, {len(self.failed)} without thumbnail>"

    def image(self) -> Image.Image:
        """The sheet as one Pillow image (labels drawn under each thumbnail)."""
        Image = require_pillow()
        from PIL import ImageDraw, ImageFont

        layout = self.layout
        sheet = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
        draw = ImageDraw.Draw(sheet)
        try:
            font = ImageFont.load_default(size=11)
        except (TypeError, OSError, ImportError):  # Pillow without FreeType: the bitmap font
            font = ImageFont.load_default()
        for i, tile in enumerate(self.tiles):
            x, y = layout.box(i)
            thumb = tile.thumbnail.image()
            if thumb is None:
                draw.rectangle([x, y, x + self.size - 1, y + self.size - 1], outline=(200, 60, 60))
            else:
                thumb = thumb.convert("RGB")
                sheet.paste(thumb, layout.image_at(i, *thumb.size))
            for n, line in enumerate(tile.lines):
                draw.text((x, y + self.size + 4 + 16 * n), _fit(draw, font, line, self.size), fill=(30, 30, 30),
                          font=font)
        return sheet

    def to_png(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        self.image().save(path, format="PNG")
        return path

    def html_fragment(self) -> str:
        """The sheet as one ``<div>`` with inline styles (what a notebook shows; the page wraps it)."""
        layout = self.layout
        absolute = "position:absolute;display:block;margin:0;padding:0;"
        text = "font:11px/16px sans-serif;color:#1e1e1e;overflow:hidden;white-space:nowrap;text-overflow:ellipsis;"
        items = []
        for i, tile in enumerate(self.tiles):
            x, y = layout.box(i)
            first, second = (html.escape(s) for s in tile.lines)
            label = (f'<div class="label" style="{absolute}{text}left:{x}px;top:{y + self.size + 2}px;'
                     f'width:{self.size}px">{first}<br>{second}</div>')
            thumb = tile.thumbnail.image()
            if thumb is None:
                body = (f'<div class="missing" style="{absolute}border:1px solid #c83c3c;left:{x}px;top:{y}px;'
                        f'width:{self.size - 2}px;height:{self.size - 2}px"></div>')
            else:
                ix, iy = layout.image_at(i, *thumb.size)
                src = "data:image/png;base64," + base64.b64encode(tile.thumbnail.png).decode()
                alt = html.escape(f"{tile.collection or ''} {tile.patient or ''} {tile.thumbnail.series_uid}")
                body = (f'<img class="thumb" src="{src}" alt="{alt}" width="{thumb.size[0]}" height="{thumb.size[1]}" '
                        f'style="{absolute}left:{ix}px;top:{iy}px;max-width:none" '
                        f'data-series="{tile.thumbnail.series_uid}">')
            if tile.link:
                body = (f'<a href="{html.escape(tile.link)}" target="_blank" rel="noopener" '
                        f'title="{html.escape(tile.thumbnail.series_uid)}">{body}</a>')
            items.append(body + label)
        return (f'<div class="idc-cohort-sheet" style="position:relative;background:#fff;width:{layout.width}px;'
                f'height:{layout.height}px">\n' + "\n".join(items) + "\n</div>")

    def to_html(self, path: str | os.PathLike | None = None) -> str:
        """The page (thumbnails inline as data: URIs); written to ``path`` when given."""
        failed = f", {len(self.failed)} without thumbnail" if self.failed else ""
        page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>
<style>html, body {{ margin: 0; padding: 0; background: #fff; }}
footer {{ padding: 0 {GAP}px {GAP}px; font: 11px/16px sans-serif; color: #666; }}</style>
</head><body>
{self.html_fragment()}
<footer>{html.escape(self.title)}: {len(self.tiles)} slides{failed}. Made by idc-cohort.</footer>
</body></html>
"""
        if path is not None:
            Path(path).write_text(page, encoding="utf-8")
        return page

    def _repr_html_(self) -> str:
        return self.html_fragment()

    def _repr_png_(self) -> bytes:
        out = io.BytesIO()
        self.image().save(out, format="PNG")
        return out.getvalue()


def _fit(draw: Any, font: Any, text: str, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def stain_label(stains: Sequence[str] | None) -> str | None:
    """A short stain label: "H&E" for hematoxylin and eosin, else the substances without "stain", joined by "+"."""
    if not stains:
        return None
    names = sorted({str(s).removesuffix(" stain").removeprefix("water soluble ") for s in stains}, key=str.lower)
    return "H&E" if [n.lower() for n in names] == ["eosin", "hematoxylin"] else "+".join(names)


def slide_labels(cohort: Cohort) -> list[dict[str, Any]]:
    """The SM series of ``cohort`` with collection, patient and (from sm_index when the catalog has it
    or can fetch it) organ, stain and objective power."""
    sm_index = True
    try:
        cohort.catalog.ensure("sm_index")
    except CohortError:
        sm_index = False
    sql = _LABELS_SQL.format(sm=_SM_COLUMNS if sm_index else "",
                             join="LEFT JOIN sm_index s USING (SeriesInstanceUID)" if sm_index else "")
    return cohort.sql(sql).to_pylist()


def link_for(client: RoutedClient, study_uid: str, series_uid: str) -> str | None:
    route = client.routes.get(series_uid)
    if route is None or route.endpoint is None:
        return None
    if route.endpoint.kind in (EndpointKind.PROXY, EndpointKind.GOOGLE):
        return SLIM_VIEWER.format(study=study_uid, series=series_uid)
    return route.url


def contact_sheet(cohort: Cohort, client: RoutedClient | None = None, *, policy: Any = None,
                  size: int = DEFAULT_SIZE, columns: int = 6, cache_dir: str | os.PathLike | None = None,
                  workers: int = 16, limit: int | None = None, progress=None) -> ContactSheet:
    """Thumbnails of the SM series of ``cohort`` (at most ``limit``) as a sheet, fetched through ``client``
    (default: the cohort routed with ``policy``, see :func:`cohort.coverage.route`)."""
    if client is None:
        from .client import RoutedClient

        client = RoutedClient.for_cohort(cohort, policy)
    if columns < 1:
        raise PixelError(f"columns must be at least 1, got {columns}")
    labels = slide_labels(cohort)
    if not labels:
        raise PixelError(f"the cohort has no slide microscopy (Modality SM) series among its {len(cohort):,} series; "
                         "select slides, e.g. with the saved query sm_by_organ")
    if limit is not None:
        labels = labels[:limit]
    thumbs = fetch_thumbnails(client, [r["SeriesInstanceUID"] for r in labels], cache_dir=cache_dir, size=size,
                              workers=workers, progress=progress)
    tiles = tuple(
        Tile(thumb, row["collection_id"], row["PatientID"], row.get("organ"), stain_label(row.get("stains")),
             row.get("objective_power"), link_for(client, row["StudyInstanceUID"], row["SeriesInstanceUID"]))
        for row, thumb in zip(labels, thumbs))
    return ContactSheet(tiles, size, columns, title=str(cohort.provenance.query_name or "slides"))


def write_sheet(sheet: ContactSheet, outputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Write the sheet to each of ``outputs`` by suffix: ``.html`` or ``.png``."""
    written = []
    for out in outputs:
        path = Path(out)
        suffix = path.suffix.lower()
        if suffix not in (".html", ".htm", ".png"):
            raise PixelError(f"output {out}: unknown suffix {path.suffix!r}; use .html or .png")
        try:
            if suffix == ".png":
                sheet.to_png(path)
            else:
                sheet.to_html(path)
        except OSError as exc:
            raise PixelError(f"cannot write {out}: {exc.strerror or exc}; check that its directory exists") from None
        written.append(path)
    return written
