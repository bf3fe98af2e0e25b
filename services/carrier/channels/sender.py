"""The only I/O of the tender channels: HTTP offers to a carrier, EDI files out and in.

`HttpTenderSender` resolves the carrier's host itself, refuses before any connection when an
address is not one we may send to, and then connects to exactly the address it checked (the
Host header and TLS SNI keep the name), so a DNS answer that changes between the check and the
connection cannot redirect it. Redirects are not followed; proxies from the environment are not
used. Allowed by default: loopback only (tests, a carrier simulator beside the service). With
`allow_public=True`: globally routable addresses only, never loopback. Private, link-local
(169.254.169.254, the cloud metadata service), multicast, reserved and unspecified addresses are
refused in both modes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

from services.carrier.channels import edi_x12, http_api
from services.carrier.channels.model import (
    CarrierUnavailable,
    ChannelError,
    TenderDocument,
    TenderResponse,
    UnsafeDestination,
)

Resolver = Callable[[str, int], Awaitable[list[str]]]
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


async def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise CarrierUnavailable(f"cannot resolve {host}: {error}") from None
    return sorted({str(info[4][0]) for info in infos})


def address_allowed(address: _Address, *, allow_public: bool) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return not allow_public
    return allow_public and address.is_global and not address.is_multicast


class HttpTenderSender:
    """Offers tenders to one carrier's JSON API at `base_url`."""

    def __init__(self, base_url: str, *, timeout_s: float = 5.0,
                 client: httpx.AsyncClient | None = None, allow_public: bool = False,
                 resolver: Resolver = system_resolver) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host or url.userinfo:
            raise UnsafeDestination(f"not an http(s) URL without credentials: {base_url!r}")
        self._url, self._timeout_s, self._allow_public = url, timeout_s, allow_public
        self._resolver = resolver
        self._client = client or httpx.AsyncClient(trust_env=False, follow_redirects=False)
        self._owns_client = client is None

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _checked_address(self) -> str:
        host, port = self._url.host, self._url.port or (443 if self._url.scheme == "https" else 80)
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in
                         await self._resolver(host, port)]
        if not addresses:
            raise CarrierUnavailable(f"{host} resolves to no address")
        refused = [str(a) for a in addresses
                   if not address_allowed(a, allow_public=self._allow_public)]
        if refused:  # every address must pass: a name with one good and one bad address is bad
            raise UnsafeDestination(f"{host} resolves to {', '.join(refused)}: not an address "
                                    f"tenders may be sent to")
        return str(addresses[0])

    async def offer(self, document: TenderDocument, *,
                    callback_url: str | None = None) -> TenderResponse | None:
        """The carrier's answer now, or None when it will answer later (HTTP 202)."""
        request = http_api.build_offer_request(document, callback_url=callback_url)
        address = await self._checked_address()
        original_host = self._url.netloc.decode("ascii")
        url = self._url.copy_with(host=address,
                                  path=self._url.path.rstrip("/") + request.path)
        extensions = {"sni_hostname": self._url.host} if self._url.scheme == "https" else {}
        built = self._client.build_request(
            request.method, url, content=request.body,
            headers=[*request.headers, ("host", original_host)],
            timeout=httpx.Timeout(self._timeout_s), extensions=extensions)
        try:
            async with asyncio.timeout(self._timeout_s):
                status, body = await self._send(built)
        except (TimeoutError, httpx.TimeoutException):
            raise CarrierUnavailable(f"no answer within {self._timeout_s} s") from None
        except httpx.TransportError as error:
            raise CarrierUnavailable(f"carrier unreachable: {error!r}") from None
        answer = http_api.parse_offer_response(status, body)
        if answer is not None and (answer.tender_id, answer.carrier_scac) != (
                document.tender_id, document.carrier_scac):
            raise ChannelError("the answer is for another tender or carrier", "tender_id")
        return answer

    async def _send(self, request: httpx.Request) -> tuple[int, bytes]:
        response = await self._client.send(request, stream=True, follow_redirects=False)
        try:
            body = bytearray()
            async for chunk in response.aiter_bytes():  # decoded: the cap bounds memory
                body += chunk
                if len(body) > http_api.MAX_BODY:
                    raise ChannelError(f"answer larger than {http_api.MAX_BODY} bytes", "body")
            return response.status_code, bytes(body)
        finally:
            await response.aclose()


class EdiFileSender:
    """Writes 204 interchanges into an outbox directory a file transfer (AS2/SFTP) picks up."""

    def __init__(self, outbox_dir: Path, *, sender_id: str, receiver_id: str,
                 test: bool = False) -> None:
        self._dir, self._sender, self._receiver, self._test = (
            Path(outbox_dir), sender_id, receiver_id, test)

    def write(self, document: TenderDocument, *, control_number: int, now: datetime) -> Path:
        """Atomically: a reader sees the whole file or none; an existing file is never replaced."""
        text = edi_x12.build_204(document, control_number=control_number,
                                 sender_id=self._sender, receiver_id=self._receiver,
                                 now=now, test=self._test)
        final = self._dir / f"204-{control_number:09d}.x12"
        temp = self._dir / f".{final.name}.{os.getpid()}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(text.encode("ascii"))
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temp, final)  # unlike rename, fails instead of replacing a file
            except FileExistsError:
                raise ChannelError(f"{final.name} is already in the outbox",
                                   "control_number") from None
        finally:
            temp.unlink(missing_ok=True)
        _fsync_dir(self._dir)
        return final

    async def send(self, document: TenderDocument, *, control_number: int,
                   now: datetime) -> Path:
        return await asyncio.to_thread(self.write, document, control_number=control_number,
                                       now=now)


@dataclass(frozen=True, slots=True)
class InboxFile:
    path: Path
    responses: tuple[TenderResponse, ...]
    error: ChannelError | None  # set when the file is not a valid 990 interchange


class EdiInbox:
    """Reads the 990 files carriers drop into `inbox_dir`; `done`/`reject` move them aside."""

    def __init__(self, inbox_dir: Path, *, max_bytes: int = 10 * 1024 * 1024) -> None:
        self._dir, self._max = Path(inbox_dir), max_bytes

    def read(self) -> list[InboxFile]:
        """Every complete file, by name; dot-files and *.tmp/*.part are uploads in progress."""
        found = []
        for path in sorted(self._dir.iterdir()):
            if (path.name.startswith(".") or path.suffix in (".tmp", ".part")
                    or path.is_symlink() or not path.is_file()):
                continue
            found.append(self._read(path))
        return found

    def _read(self, path: Path) -> InboxFile:
        try:
            if path.stat().st_size > self._max:
                raise ChannelError(f"file larger than {self._max} bytes", path.name)
            text = path.read_bytes().decode("ascii")
            return InboxFile(path, tuple(edi_x12.parse_990s(text)), None)
        except UnicodeDecodeError as error:
            return InboxFile(path, (), ChannelError(f"not ASCII: {error.reason}", path.name))
        except ChannelError as error:
            return InboxFile(path, (), error)
        except OSError as error:  # vanished or unreadable: set aside, not a crash of the reader
            return InboxFile(path, (), ChannelError(f"cannot read: {error.strerror}",
                                                    path.name))

    def done(self, item: InboxFile) -> Path:
        return self._move(item.path, "processed")

    def reject(self, item: InboxFile) -> Path:
        return self._move(item.path, "rejected")

    def _move(self, path: Path, folder: str) -> Path:
        target_dir = self._dir / folder
        target_dir.mkdir(exist_ok=True)
        target = target_dir / path.name
        os.replace(path, target)
        _fsync_dir(self._dir)
        return target


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
