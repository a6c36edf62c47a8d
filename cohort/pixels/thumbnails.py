"""A small image of each slide of a cohort, fetched through the routed client and cached on disk.

For each SM series: the THUMBNAIL instance if it has one, else the OVERVIEW, else the
lowest-resolution pyramid level (the VOLUME instance with the fewest pixels). Its frames
are fetched by parallel single-frame GETs (frames of all slides share one pool of
``workers``), in their stored encoding (JPEG, JPEG 2000, raw), through the routed client's
retry policy and rate limit; a frame Pillow cannot decode is fetched again rendered by the
server. The frames are stitched, cropped to the image size and scaled to fit ``size``.

Cache, per series under ``cache_dir/<SeriesInstanceUID>/``: ``plan.json`` (the instance
chosen and where each frame goes), ``frames/<n>`` (each frame, written atomically) and
``thumbnail.png``. A run that was interrupted resumes: a frame on disk is never fetched
again, and a series with its thumbnail is not asked for at all.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from ..errors import PixelError

if TYPE_CHECKING:
    from PIL import Image

    from .client import RoutedClient

log = logging.getLogger(__name__)

#: The QIDO attributes that choose the instance and lay out its frames.
INSTANCE_FIELDS = ("ImageType", "NumberOfFrames", "Rows", "Columns", "TotalPixelMatrixColumns",
                   "TotalPixelMatrixRows", "DimensionOrganizationType", "SamplesPerPixel")
#: Refuse to stitch more frames than this for one thumbnail (a pyramid without small levels).
MAX_FRAMES = 1024
DEFAULT_SIZE = 256
PLAN_VERSION = 1


def default_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("idc-cohort")) / "thumbnails"


def require_pillow():
    try:
        from PIL import Image
    except ImportError:
        raise PixelError("thumbnails need Pillow: pip install 'idc-cohort[wsi]'") from None
    return Image


@dataclass(frozen=True)
class Plan:
    """Which instance makes the thumbnail of a series, and where each of its frames goes."""

    study_uid: str
    series_uid: str
    sop_uid: str
    #: THUMBNAIL, OVERVIEW or VOLUME (the lowest-resolution level)
    kind: str
    width: int
    height: int
    tile_width: int
    tile_height: int
    #: (frame number, x, y): the frame's top-left pixel in the image
    frames: tuple[tuple[int, int, int], ...]

    def to_json(self) -> str:
        return json.dumps({"version": PLAN_VERSION, **{k: getattr(self, k) for k in self.__dataclass_fields__}})

    @classmethod
    def from_json(cls, text: str) -> Plan | None:
        data = json.loads(text)
        if data.pop("version", None) != PLAN_VERSION:
            return None
        data["frames"] = tuple(tuple(f) for f in data["frames"])
        return cls(**data)


@dataclass(frozen=True)
class Thumbnail:
    """The thumbnail of one slide, or why there is none."""

    series_uid: str
    study_uid: str
    #: PNG bytes of the thumbnail (None when it failed)
    png: bytes | None = field(repr=False)
    #: which instance it was made from: THUMBNAIL, OVERVIEW or VOLUME
    kind: str | None = None
    #: frames fetched from the endpoint in this run (0: all from the cache)
    fetched: int = 0
    error: str | None = None

    def image(self) -> Image.Image | None:
        if self.png is None:
            return None
        return require_pillow().open(io.BytesIO(self.png))


def _value(item: dict, tag: str, index: int | None = 0) -> Any:
    value = item.get(tag, {}).get("Value")
    if not value:
        return None
    return value if index is None else value[index]


def plan_series(client: RoutedClient, series_uid: str) -> Plan:
    """Choose the instance whose frames make the thumbnail of ``series_uid`` (QIDO, plus metadata for sparse tiling)."""
    route = client.route_of(series_uid)
    fields = list(INSTANCE_FIELDS)
    instances = client.search_for_instances(route.study_uid, route.series_uid, fields=fields)
    candidates = []
    for item in instances:
        image_type = [str(v).upper() for v in (_value(item, "00080008", None) or [])]
        flavour = image_type[2] if len(image_type) > 2 else "VOLUME"
        cols, rows = _value(item, "00480006"), _value(item, "00480007")
        tile_w, tile_h = _value(item, "00280011"), _value(item, "00280010")
        if tile_w is None or tile_h is None:
            continue  # not an image (e.g. an annotation in the same series)
        width, height = int(cols or tile_w), int(rows or tile_h)
        rank = {"THUMBNAIL": 0, "OVERVIEW": 1}.get(flavour, 2 if flavour == "VOLUME" else 3)
        candidates.append((rank, width * height, item, flavour, width, height, int(tile_w), int(tile_h)))
    if not candidates or min(c[0] for c in candidates) > 2:
        raise PixelError(f"series {series_uid} has no THUMBNAIL, OVERVIEW or VOLUME image instance at "
                         f"{route.endpoint.name} ({len(instances)} instances); is it a slide (Modality SM)?")
    rank, _, item, flavour, width, height, tile_w, tile_h = min(candidates, key=lambda c: (c[0], c[1]))
    sop = _value(item, "00080018")
    n_frames = int(_value(item, "00280008") or 1)
    across, down = -(-width // tile_w), -(-height // tile_h)
    if _value(item, "00209311") == "TILED_SPARSE":
        frames = _sparse_positions(client, route.study_uid, route.series_uid, sop, n_frames)
    else:  # TILED_FULL (or a single frame): row by row, the first focal plane and optical path first
        frames = tuple((n + 1, (n % across) * tile_w, (n // across) * tile_h)
                       for n in range(min(n_frames, across * down)))
    if len(frames) > MAX_FRAMES:
        raise PixelError(f"series {series_uid}: the smallest image ({sop}, {width}x{height}) has {len(frames)} "
                         f"frames, more than {MAX_FRAMES}; the series has no small pyramid level to make a "
                         "thumbnail from")
    return Plan(route.study_uid, route.series_uid, sop, flavour, width, height, tile_w, tile_h, frames)


def _sparse_positions(client: RoutedClient, study: str, series: str, sop: str, n_frames: int):
    """(frame, x, y) of a TILED_SPARSE instance, from its per-frame plane positions (first focal plane)."""
    meta = client.retrieve_instance_metadata(study, series, sop)
    groups = _value(meta, "52009230", None) or []
    frames, seen = [], set()
    for number, group in enumerate(groups[:n_frames], start=1):
        position = (_value(group, "0048021A") or {})  # PlanePositionSlideSequence
        x, y = _value(position, "0048021E"), _value(position, "0048021F")
        if x is None or y is None:
            continue
        if (x, y) not in seen:  # other focal planes / optical paths at the same place
            seen.add((x, y))
            frames.append((number, int(x) - 1, int(y) - 1))
    if not frames:
        raise PixelError(f"instance {sop} of series {series} is TILED_SPARSE without frame positions "
                         "(PerFrameFunctionalGroupsSequence/PlanePositionSlideSequence)")
    return tuple(frames)


# -- decoding --------------------------------------------------------------------------------------
def decode_frame(data: bytes, tile_w: int, tile_h: int, samples: int = 3) -> Image.Image:
    """A frame as a Pillow RGB image: JPEG, JPEG 2000, PNG, or raw 8-bit RGB/MONOCHROME pixels."""
    Image = require_pillow()
    if data[:2] == b"\xff\xd8" or data[:4] == b"\xff\x4f\xff\x51" or data[:8] == b"\x89PNG\r\n\x1a\n" \
            or data[4:8] == b"jP  ":
        image = Image.open(io.BytesIO(data))
        image.load()
        return image.convert("RGB")
    for spp, mode in ((samples, "RGB" if samples == 3 else "L"), (3, "RGB"), (1, "L")):
        if len(data) in (tile_w * tile_h * spp, tile_w * tile_h * spp + 1):  # (+1: even-length padding)
            return Image.frombytes(mode, (tile_w, tile_h), data[: tile_w * tile_h * spp]).convert("RGB")
    raise PixelError(f"cannot decode a {len(data):,}-byte frame (neither JPEG, JPEG 2000, PNG nor raw "
                     f"{tile_w}x{tile_h} 8-bit pixels)")


class _Cache:
    """``root/<series>/plan.json``, ``frames/<n>``, ``thumbnail.png``; every file written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def dir(self, series_uid: str) -> Path:
        if not series_uid.replace(".", "").isdigit():
            raise PixelError(f"{series_uid!r} is not a DICOM UID (digits and dots)")
        return self.root / series_uid

    @staticmethod
    def write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def plan(self, series_uid: str) -> Plan | None:
        path = self.dir(series_uid) / "plan.json"
        try:
            return Plan.from_json(path.read_text()) if path.exists() else None
        except (ValueError, TypeError, KeyError):
            return None  # a damaged plan is made again

    def frame_path(self, series_uid: str, number: int) -> Path:
        return self.dir(series_uid) / "frames" / str(number)

    def thumbnail(self, series_uid: str) -> Path:
        return self.dir(series_uid) / "thumbnail.png"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} from {exc.response.url.split('?')[0]}"
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def fetch_thumbnails(client: RoutedClient, series_uids: Sequence[str], *, cache_dir: str | os.PathLike | None = None,
                     size: int = DEFAULT_SIZE, workers: int = 16,
                     progress: Callable[[int, int], None] | None = None) -> list[Thumbnail]:
    """The thumbnail of each series (in order), from the cache or fetched through ``client``.

    A series that fails (not served, not a slide, frames refused after the retries) gets a
    :class:`Thumbnail` with ``error`` set; the others go on. ``progress(done, total)`` is called
    as frames arrive.
    """
    if size < 16:
        raise PixelError(f"thumbnail size must be at least 16 pixels, got {size}")
    if workers < 1:
        raise PixelError(f"workers must be at least 1, got {workers}")
    require_pillow()
    cache = _Cache(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    results: dict[str, Thumbnail] = {}
    plans: dict[str, Plan] = {}
    fetched: dict[str, int] = {}
    errors: dict[str, str] = {}
    uids = list(dict.fromkeys(series_uids))

    def planned(uid: str) -> None:
        try:
            route = client.route_of(uid)
            if cache.thumbnail(uid).exists():
                cached = cache.plan(uid)
                results[uid] = Thumbnail(uid, route.study_uid, cache.thumbnail(uid).read_bytes(),
                                         cached.kind if cached else None)
                return
            plan = cache.plan(uid)
            if plan is None:
                plan = plan_series(client, uid)
                cache.write(cache.dir(uid) / "plan.json", plan.to_json().encode())
            plans[uid] = plan
        except (PixelError, requests.RequestException) as exc:
            errors[uid] = str(exc) if isinstance(exc, PixelError) else _describe(exc)

    with ThreadPoolExecutor(max_workers=min(workers, max(1, len(uids)))) as pool:
        list(pool.map(planned, uids))

    todo = [(uid, number) for uid, plan in plans.items() for number, _, _ in plan.frames
            if not cache.frame_path(uid, number).exists()]
    lock = threading.Lock()
    done = 0

    def fetch(uid: str, number: int) -> None:
        plan = plans[uid]
        frame = client.retrieve_instance_frames(plan.study_uid, uid, plan.sop_uid, [number],
                                                media_types=(("application/octet-stream", "*"),))[0]
        try:
            decode_frame(bytes(frame), plan.tile_width, plan.tile_height)
        except (PixelError, OSError):  # an encoding Pillow cannot read (e.g. JPEG-LS): the server renders it
            frame = client.retrieve_instance_frames_rendered(plan.study_uid, uid, plan.sop_uid, [number],
                                                             media_types=("image/png",))
        cache.write(cache.frame_path(uid, number), bytes(frame))

    if todo:
        with ThreadPoolExecutor(max_workers=min(workers, len(todo))) as pool:
            futures = {pool.submit(fetch, uid, number): uid for uid, number in todo}
            try:
                for future in as_completed(futures):
                    uid = futures[future]
                    exc = future.exception()
                    with lock:
                        done += 1
                        if exc is None:
                            fetched[uid] = fetched.get(uid, 0) + 1
                        elif uid not in errors:
                            errors[uid] = (str(exc) if isinstance(exc, PixelError)
                                           else f"frames of series {uid}: {_describe(exc)}")
                    if progress is not None:
                        progress(done, len(todo))
            except BaseException:  # Ctrl-C: drop the frames not started; those written stay for the next run
                for future in futures:
                    future.cancel()
                raise

    for uid, plan in plans.items():
        if uid in errors:
            continue
        try:
            png = _compose(cache, plan, size)
        except (PixelError, OSError) as exc:
            errors[uid] = f"series {uid}: {exc}"
            continue
        cache.write(cache.thumbnail(uid), png)
        results[uid] = Thumbnail(uid, plan.study_uid, png, plan.kind, fetched.get(uid, 0))
    for uid, error in errors.items():
        study = client.routes[uid].study_uid if uid in client.routes else ""
        results[uid] = Thumbnail(uid, study, None, plans[uid].kind if uid in plans else None,
                                 fetched.get(uid, 0), error)
    return [results[uid] for uid in uids]


def _compose(cache: _Cache, plan: Plan, size: int) -> bytes:
    """Stitch the cached frames of ``plan`` into one image, scaled to fit ``size`` x ``size``; PNG bytes."""
    Image = require_pillow()
    canvas = Image.new("RGB", (plan.width, plan.height), "white")
    for number, x, y in plan.frames:
        tile = decode_frame(cache.frame_path(plan.series_uid, number).read_bytes(), plan.tile_width,
                            plan.tile_height)
        canvas.paste(tile, (x, y))
    scale = min(1.0, size / max(plan.width, plan.height))
    if scale < 1:
        canvas = canvas.resize((max(1, round(plan.width * scale)), max(1, round(plan.height * scale))),
                               Image.Resampling.LANCZOS)
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()
