"""Open a slide of a cohort in wsidicom, on the endpoint its series is routed to.

wsidicom is an optional extra: ``pip install 'idc-cohort[wsi]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import PixelError

if TYPE_CHECKING:
    from ..cohort import Cohort
    from .client import RoutedClient

WSI_EXTRA = "pip install 'idc-cohort[wsi]'"


def require_wsidicom():
    """The wsidicom module, or a :class:`PixelError` that names the extra to install."""
    try:
        import wsidicom
    except ImportError as exc:
        raise PixelError(f"opening slides needs wsidicom, which is not installed ({exc.name} is missing): "
                         f"{WSI_EXTRA}") from None
    return wsidicom


def open_slide(source: RoutedClient | Cohort, series_uid: str, policy: Any = None, **kwargs: Any):
    """A ``wsidicom.WsiDicom`` for one series of a cohort, on the endpoint it is routed to.

    ``source``: a :class:`~cohort.pixels.RoutedClient`, or a cohort (then routed with ``policy``,
    see :func:`cohort.coverage.route`). The slide reads its metadata and frames through the routed
    client, so every request goes to the series' endpoint under its retry policy and rate limit.
    ``kwargs`` go to ``WsiDicom.open_web``.
    """
    from .client import RoutedClient

    wsidicom = require_wsidicom()
    if isinstance(source, RoutedClient):
        client = source
    else:
        if series_uid not in source:
            raise PixelError(f"series {series_uid} is not in the cohort ({len(source):,} series)")
        client = RoutedClient.for_cohort(source, policy)
    route = client.route_of(series_uid)
    route.url  # noqa: B018 - raises for a series no endpoint serves
    web = wsidicom.WsiDicomWebClient(client)
    try:
        return wsidicom.WsiDicom.open_web(web, route.study_uid, route.series_uid, **kwargs)
    except PixelError:
        raise
    except Exception as exc:  # wsidicom raises many kinds (no instances found, HTTP errors, bad metadata)
        raise PixelError(f"wsidicom could not open series {series_uid} at {route.endpoint.name} "
                         f"({type(exc).__name__}: {str(exc)[:300]}); check that the endpoint holds its "
                         "VL Whole Slide Microscopy instances (cohort coverage --verify)") from exc
