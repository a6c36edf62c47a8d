"""Open a slide of a cohort in wsidicom, on the endpoint its series is routed to.

wsidicom is an optional extra: ``pip install 'idc-cohort[wsi]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import PixelError

if TYPE_CHECKING:
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


def open_slide(client: RoutedClient, series_uid: str, **kwargs: Any):
    """A ``wsidicom.WsiDicom`` for one series of the routed cohort (``kwargs`` go to ``WsiDicom.open_web``).

    The slide reads its metadata and frames through ``client``, so every request goes to the
    series' endpoint under the client's retry policy and rate limit.
    """
    wsidicom = require_wsidicom()
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
