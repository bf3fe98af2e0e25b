"""The EDI inbox job: the 990s carriers drop into the inbox directory, applied to their tenders.

Every poll reads the complete files (`EdiInbox` skips uploads in progress) and applies each
990 through the use cases (the same guards as AcceptTender/RejectTender). A file goes to
`processed/` when each of its answers was applied or refused as late, to `rejected/` when it
is not a valid 990 interchange, names a tender that is not ours, or comes from another SCAC
than the tendered carrier's; either way it is logged and the job carries on. A failure that is
not the file's (the database unreachable) leaves it in the inbox for the next poll.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from services.carrier.adapters.tender_channels import channel_answer
from services.carrier.adapters.tender_documents import long_id
from services.carrier.channels import ChannelError, EdiInbox, InboxFile
from services.carrier.domain.model import ChannelAnswer
from services.carrier.use_cases import AnswerOutcome

log = logging.getLogger(__name__)

Apply = Callable[[str, str, ChannelAnswer], Awaitable[AnswerOutcome]]


class EdiInboxPoller:
    def __init__(self, inbox_dir: Path, apply: Apply, *, poll_s: float) -> None:
        self._dir, self._apply, self._poll_s = Path(inbox_dir), apply, poll_s
        self._inbox = EdiInbox(self._dir)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until stopped (a supervised job)."""
        await asyncio.to_thread(self._dir.mkdir, parents=True, exist_ok=True)
        while not stop.is_set():
            await self.poll()
            try:
                await asyncio.wait_for(stop.wait(), timeout=self._poll_s)
            except TimeoutError:
                pass

    async def poll(self) -> int:
        """Handle every complete file now in the inbox; returns how many were filed."""
        filed = 0
        for item in await asyncio.to_thread(self._inbox.read):
            try:
                good = await self._handle(item)
                moved = await asyncio.to_thread(
                    self._inbox.done if good else self._inbox.reject, item)
            except Exception:  # not the file's fault (the database, a move): the next poll
                log.exception("990 file not handled; retrying", extra={"file": item.path.name})
                continue
            log.info("990 file filed", extra={"file": item.path.name, "to": str(moved)})
            filed += 1
        return filed

    async def _handle(self, item: InboxFile) -> bool:
        if item.error is not None:
            log.warning("not a valid 990 interchange", extra={
                "file": item.path.name, "error": str(item.error)})
            return False
        good = bool(item.responses)
        for response in item.responses:
            try:
                tender_id = long_id(response.tender_id)
            except ChannelError as error:
                log.warning("990 for a tender that is not ours", extra={
                    "file": item.path.name, "error": str(error)})
                good = False
                continue
            outcome = await self._apply(tender_id, response.carrier_scac,
                                        channel_answer(response))
            good = good and outcome != AnswerOutcome.UNKNOWN
        return good
