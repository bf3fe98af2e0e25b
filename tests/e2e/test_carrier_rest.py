"""The carrier service through the real edge: a shipper imports a rate card, quotes and
tenders over REST + OAuth2; the carrier accepts with its own client and `tenders.respond`
scope; another carrier's client sees nothing (404); bad input is a JSON 400."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format

from tests.carrier_samples import carrier, rate_card, shipment
from tests.e2e.conftest import Partner

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:The httpx module is deprecated")]

SHIPPER_SCOPES = ("carriers.read", "carriers.write", "rates.read", "tenders.write",
                  "tenders.respond")
CSV = "\n".join([
    "lane_id,origin_country,origin_postal_prefix,destination_country,destination_postal_prefix,"
    "mode,transit_days,pricing,rate,weight_from_kg,weight_to_kg,minimum_charge",
    "HH-B,DE,20,DE,10,FTL,1,PER_KG,0.12,0,1000,95",
    "HH-B,DE,20,DE,10,FTL,1,PER_KG,0.09,1000,,95",
])


def as_json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def card_template() -> dict[str, Any]:
    card = rate_card()
    del card.lanes[:]
    return as_json(card)


async def test_import_quote_tender_and_accept_as_the_carrier(partner_factory: Any) -> None:
    shipper: Partner = await partner_factory(SHIPPER_SCOPES)
    trucker: Partner = await partner_factory(("tenders.respond",))
    stranger: Partner = await partner_factory(("tenders.respond",))

    created = await shipper.http.post("/v1/carriers", json=as_json(
        carrier("Nordfracht", "NORF", oauth_client_id=trucker.client_id)))
    assert created.status_code == 200, created.text
    name = created.json()["name"]
    imported = await shipper.http.post(f"/v1/{name}/rateCards:import", json={
        "rateCard": card_template(), "csvContent": CSV})
    assert imported.status_code == 200, imported.text
    assert imported.json()["lanes"][0]["pricing"]["perKg"]["breaks"][1]["ratePerKg"] == {
        "currencyCode": "EUR", "units": "0", "nanos": 90000000}

    made = await shipper.http.post("/v1/shipments", json=as_json(shipment(1250)))
    assert made.status_code == 200, made.text
    shipment_name = made.json()["name"]
    quoted = await shipper.http.post("/v1/shipments:quote", json={
        "shipmentName": shipment_name, "fuelPriceIndex": "1.62"})
    assert quoted.status_code == 200, quoted.text
    [quote] = quoted.json()["quotes"]
    assert quote["carrier"] == name
    assert quote["price"]["total"] == {"currencyCode": "EUR", "units": "126", "nanos": 560000000}

    tendered = await shipper.http.post(f"/v1/{shipment_name}:tender",
                                       json={"responseTimeout": "3600s"},
                                       headers={"idempotency-key": "tender-1"})
    assert tendered.status_code == 200, tendered.text
    assert tendered.json()["state"] == "STATE_TENDERED"

    listed = await trucker.http.get("/v1/tenders", params={"filter": "state = OFFERED"})
    assert listed.status_code == 200, listed.text
    [offer] = listed.json()["tenders"]
    assert offer["carrier"] == name
    assert offer["price"]["total"] == {"currencyCode": "EUR", "units": "126", "nanos": 560000000}
    # another carrier's client: nothing listed, the tender is a 404, and so is answering it
    assert (await stranger.http.get("/v1/tenders")).json().get("tenders", []) == []
    assert (await stranger.http.get(f"/v1/{offer['name']}")).status_code == 404
    refused = await stranger.http.post(f"/v1/{offer['name']}:accept", json={})
    assert refused.status_code == 404, refused.text
    # the carrier's client may answer tenders but not shop rates
    forbidden = await trucker.http.post("/v1/shipments:quote",
                                        json={"shipmentName": shipment_name})
    assert forbidden.status_code == 403, forbidden.text

    accepted = await trucker.http.post(f"/v1/{offer['name']}:accept", json={})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["state"] == "STATE_ACCEPTED"
    again = await trucker.http.post(f"/v1/{offer['name']}:accept", json={})
    assert again.status_code == 200 and again.json()["state"] == "STATE_ACCEPTED"
    booked = await shipper.http.get(f"/v1/{shipment_name}")
    assert booked.json()["state"] == "STATE_BOOKED"
    assert booked.json()["agreedPrice"] == offer["price"]
    scorecards = await shipper.http.get("/v1/laneScorecards")
    assert scorecards.status_code == 200, scorecards.text
    [card] = scorecards.json()["laneScorecards"]
    assert card["tendersAccepted"] == 1


async def test_a_bad_csv_is_a_json_400_naming_rows_and_columns(partner_factory: Any) -> None:
    shipper: Partner = await partner_factory(SHIPPER_SCOPES)
    created = await shipper.http.post("/v1/carriers", json=as_json(carrier()))
    name = created.json()["name"]
    bad = CSV + "\nHH-X,DE,20,DE,10,FTL,1,FLAT,=HYPERLINK(\"x\"),,,"
    refused = await shipper.http.post(f"/v1/{name}/rateCards:import", json={
        "rateCard": card_template(), "csvContent": bad})
    assert refused.status_code == 400, refused.text
    details = refused.json()["details"]
    fields = {v["field"]: v["description"] for d in details
              for v in d.get("fieldViolations", [])}
    assert "row 4, column 9 (rate)" in fields["csv_content.rows[4].rate"]
    listed = await shipper.http.get(f"/v1/{name}/rateCards")
    assert listed.json().get("rateCards", []) == []
    nan = await shipper.http.post("/v1/shipments:quote", json={
        "shipment": as_json(shipment()), "costWeight": "NaN"})
    assert nan.status_code == 400, nan.text
