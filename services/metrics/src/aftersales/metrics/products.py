"""The product dimension of the KPIs, bounded: product models and device types come from channels, so
only those in the configured catalogue (KPI_PRODUCT_MODELS) are kept; every other value counts as
`other`. The mapping is applied before an event is folded, so a ticket's stored facts keep the label they
were counted under even when the catalogue changes later."""

from __future__ import annotations

from collections.abc import Collection

from pydantic import BaseModel

from aftersales.shared.contracts.events import TicketFacts

OTHER = "other"


def bounded_product(data: BaseModel, catalogue: Collection[str]) -> BaseModel:
    """Return ticket facts with `product_model` replaced by its catalogue label; other events as they are."""
    if not isinstance(data, TicketFacts):
        return data
    value = data.product_model or data.device_type
    return data.model_copy(update={"product_model": value if value in catalogue else OTHER})
