"""PIPL data export in notify: the customer's contact points (its recipient document, `_id` =
`customer:<id>`: phone, e-mail, channels, language, quiet hours), sealed to the export's public key
(`shared/export.py`). Deliveries carry ids and links only and are not personal data."""

from __future__ import annotations

from aftersales.notify.domain import RecipientKind, recipient_id
from aftersales.notify.store import RecipientStore, recipient_document
from aftersales.shared.contracts.privacy import ExportRequested
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.export import ExportLedger, Records


class NotifyExport:
    """Notify's answer to an export request: the customer's contact points."""

    def __init__(self, *, recipients: RecipientStore, ledger: ExportLedger) -> None:
        self.recipients = recipients
        self.ledger = ledger

    async def on_export_requested(self, request: ExportRequested, _: CloudEvent) -> None:
        await self.ledger.answer(request, lambda: self._records(request))

    async def _records(self, request: ExportRequested) -> Records:
        if request.chunk != 0:  # notify keeps nothing by ticket: the first chunk has it all
            return {}
        recipient = await self.recipients.find(recipient_id(RecipientKind.CUSTOMER, request.customer_id))
        return {"recipients": [recipient_document(recipient)] if recipient is not None else []}
