"""The one table of vendor codes: canonical code ↔ X12 code ↔ JSON API string.

Every code a channel writes or reads goes through here, so a trading partner whose guide uses a
different code is a one-line change. Where X12 has a standard code list we use it (equipment:
element 40 in N7-11; hazardous material: element 152 `HM` in AT5-01; 990 reservation action:
element 1594 in B1-04). Decline reasons and the non-hazmat accessorials have no X12 standard
list; those codes are the ones agreed in our trading-partner guide (N9 qualifier `ZZ`,
"mutually defined", and AT5-02 special services codes).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.carrier.channels.model import ChannelError


@dataclass(frozen=True, slots=True)
class Code:
    canonical: str
    x12: str
    api: str


def _table(*rows: Code) -> tuple[Code, ...]:
    for attr in ("canonical", "x12", "api"):
        values = [getattr(row, attr) for row in rows]
        if len(values) != len(set(values)):  # a code mapping two ways would silently win one
            raise ValueError(f"duplicate {attr} code in a code table")
    return rows


# N7-11, X12 element 40 (Equipment Description Code).
EQUIPMENT = _table(
    Code("DRY_VAN", "TV", "dry_van"),  # Truck, Van
    Code("REEFER", "RT", "reefer"),  # Controlled Temperature Trailer (Reefer)
    Code("FLATBED", "FT", "flatbed"),  # Flat Bed Trailer
    Code("CONTAINER", "CN", "container"),  # Container
)

# AT5: `x12` is "<element>:<code>": 01 = special handling code (152), 02 = special services.
ACCESSORIALS = _table(
    Code("HAZMAT", "01:HM", "hazmat"),  # Endorsed as Hazardous Material
    Code("LIFTGATE", "02:LIFT", "liftgate"),
    Code("RESIDENTIAL", "02:RES", "residential"),
    Code("INSIDE_DELIVERY", "02:INSD", "inside_delivery"),
)

# B1-04, X12 element 1594 (Reservation Action Code); api = the JSON `decision`.
ACTIONS = _table(
    Code("ACCEPTED", "A", "accepted"),  # Reservation Accepted
    Code("DECLINED", "D", "rejected"),  # Reservation Cancelled (declined)
)

# 990 N9*ZZ (mutually defined) and the JSON `reason_code`.
DECLINE_REASONS = _table(
    Code("NO_CAPACITY", "CAP", "no_capacity"),
    Code("EQUIPMENT_UNAVAILABLE", "EQP", "equipment_unavailable"),
    Code("RATE_TOO_LOW", "RAT", "rate_too_low"),
    Code("LANE_NOT_SERVED", "LAN", "lane_not_served"),
    Code("SCHEDULE_CONFLICT", "TIM", "schedule_conflict"),
    Code("OTHER", "OTH", "other"),
)

# S5-02 (Stop Reason Code) and the G62 date/time qualifiers per stop kind.
STOP_REASON = {"PICKUP": "CL", "DELIVERY": "CU"}  # Complete Load / Complete Unload
STOP_KIND_BY_REASON = {"CL": "PICKUP", "LD": "PICKUP", "CU": "DELIVERY", "UL": "DELIVERY"}
STOP_PARTY = {"PICKUP": "SF", "DELIVERY": "ST"}  # N1-01: Ship From / Ship To
# (date qualifier 432, time qualifier 176): 37/38 ship not before/no later, 53/54 deliver.
WINDOW_START = {"PICKUP": ("37", "I"), "DELIVERY": ("53", "G")}
WINDOW_END = {"PICKUP": ("38", "K"), "DELIVERY": ("54", "L")}
RESPOND_BY = ("64", "1")  # Must Respond By (date and time)
PURPOSE = {"ORIGINAL": "00", "CANCEL": "01"}  # B2A-01 (Transaction Set Purpose Code)
TENDER_REF = "TN"  # L11 / N9 qualifier carrying our tender id (Transaction Reference Number)
STOP_REF = "CR"  # L11 qualifier of a stop's reference (Customer Reference Number)
REASON_REF = "ZZ"  # 990 N9 qualifier of the decline reason code


def to_vendor(table: tuple[Code, ...], canonical: str, field: str, *, channel: str) -> str:
    """The channel's code (`channel` = "x12" or "api") for a canonical one."""
    for row in table:
        if row.canonical == canonical:
            return getattr(row, channel)
    raise ChannelError(f"no {channel} code for {field} {canonical!r}", field)


def from_vendor(table: tuple[Code, ...], code: str, where: str, *, channel: str) -> str:
    """The canonical code for a channel's code; an unknown one is a ChannelError at `where`."""
    for row in table:
        if getattr(row, channel) == code:
            return row.canonical
    known = ", ".join(getattr(row, channel) for row in table)
    raise ChannelError(f"unknown code {code!r} (known: {known})", where)
