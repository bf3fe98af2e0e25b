"""Rate shopping benchmark: QuoteRates over gRPC against 200 carriers x 25 lanes.

    python -m bench.carrier [--carriers 200] [--lanes 25] [--callers 32] [--seconds 15]
                            [--warmup 3] [--workers 2] [--out bench/results/carrier.json]

One run starts its own PostgreSQL and NATS and the carrier service as a subprocess
(`python -m services.carrier`, `--workers` processes), creates `--carriers` carriers with one
card of `--lanes` lanes each over the gRPC API (5,000 lanes by default: per-kg lanes with three
weight breaks, flat, per-km and per-pallet lanes, minimum charges, capacities, a fuel table and
four accessorials per card), then measures:

1. QuoteRates with `--callers` concurrent callers, each quote an ad-hoc load (random lane pair,
   weight, lift gate and detention): quotes/s and p50/p99 latency; every response must account
   for every carrier (quotes + exclusions = `--carriers`);
2. the reference: the same lookup as ONE SQL query from raw asyncpg (the same lanes flattened
   into a bench table; per carrier the cheapest matching lane's price, all carriers returned),
   with the same number of concurrent callers.

Writes bench/results/carrier.json with a `pass` object (one boolean per target and `all`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import nats
from google.type import date_pb2, money_pb2, postal_address_pb2

from bench import report
from bench.orders import (
    CpuMeter,
    Recorder,
    _owned,
    log,
    open_channels,
    run_phase,
    start_service,
    stop_owned,
    summary_ms,
)
from cartage.carrier.v1 import carrier_pb2, carrier_service_pb2_grpc, shipment_pb2
from cartage.carrier.v1 import carrier_service_pb2 as pb
from cartage.type.v1 import stop_pb2
from services.kit.relay import ensure_stream
from services.stack.components import Nats, Postgres, free_port

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).parent / "results" / "carrier.json"
TARGETS = {"quotes_per_s_min": 500, "p99_ms_max": 50.0}
COUNTRIES = ("DE", "FR", "NL", "PL", "AT")
SHIPPER = "bench-shipper"
FAR = date_pb2.Date(year=2099, month=12, day=31)


def money(value: Decimal) -> money_pb2.Money:
    units = int(value)
    return money_pb2.Money(currency_code="EUR", units=units,
                           nanos=int((value - units) * 1_000_000_000))


def region_pairs(count: int, rng: random.Random) -> list[tuple[str, str, str, str]]:
    regions = [(c, str(d)) for c in COUNTRIES for d in range(1, 10)]
    pairs: set[tuple[str, str, str, str]] = set()
    while len(pairs) < count:
        (oc, op), (dc, dp) = rng.sample(regions, 2)
        pairs.add((oc, op, dc, dp))
    return sorted(pairs)


def make_card(pairs: list[tuple[str, str, str, str]], rng: random.Random
              ) -> tuple[carrier_pb2.RateCard, list[dict[str, Any]]]:
    """A card over `pairs`, and the same lanes flattened for the SQL reference."""
    card = carrier_pb2.RateCard(
        display_name="bench", currency_code="EUR",
        valid_from=date_pb2.Date(year=2020, month=1, day=1), valid_to=FAR,
        fuel_surcharge=[
            carrier_pb2.FuelSurchargeBand(index_from="0", index_to="1.40", percent="6"),
            carrier_pb2.FuelSurchargeBand(index_from="1.40", index_to="1.80", percent="10"),
            carrier_pb2.FuelSurchargeBand(index_from="1.80", percent="14")],
        accessorials=[
            carrier_pb2.Accessorial(code=carrier_pb2.ACCESSORIAL_CODE_LIFTGATE,
                                    amount=money(Decimal(rng.randint(30, 60)))),
            carrier_pb2.Accessorial(code=carrier_pb2.ACCESSORIAL_CODE_DETENTION,
                                    amount=money(Decimal(rng.randint(40, 80))), free_minutes=120),
            carrier_pb2.Accessorial(code=carrier_pb2.ACCESSORIAL_CODE_HAZMAT,
                                    amount=money(Decimal(120))),
            carrier_pb2.Accessorial(code=carrier_pb2.ACCESSORIAL_CODE_RESIDENTIAL,
                                    amount=money(Decimal(25)))])
    flat: list[dict[str, Any]] = []
    for i, (oc, op, dc, dp) in enumerate(pairs):
        lane = card.lanes.add(lane_id=f"L{i:02d}", mode=carrier_pb2.MODE_FTL, transit_days=2,
                              capacity_loads_per_day=rng.choice([0, 0, 5, 20]))
        lane.origin.country, lane.origin.postal_prefix = oc, op
        lane.destination.country, lane.destination.postal_prefix = dc, dp
        minimum = Decimal(rng.randint(80, 150))
        lane.minimum_charge.CopyFrom(money(minimum))
        kind = rng.random()
        if kind < 0.6:
            base = Decimal(rng.randint(80, 160)) / 1000
            for lo, hi, factor in ((0, 1000, Decimal(1)), (1000, 10000, Decimal("0.8")),
                                   (10000, 0, Decimal("0.65"))):
                rate = (base * factor).quantize(Decimal("0.0001"))
                lane.pricing.per_kg.breaks.add(min_kg=lo, max_kg=hi, rate_per_kg=money(rate))
                flat.append({"lane": lane.lane_id, "basis": "per_kg", "rate": rate,
                             "w_from": lo, "w_to": hi or None})
        else:
            basis = "flat" if kind < 0.8 else "per_km" if kind < 0.9 else "per_pallet"
            rate = {"flat": Decimal(rng.randint(300, 900)),
                    "per_km": Decimal(rng.randint(110, 180)) / 100,
                    "per_pallet": Decimal(rng.randint(25, 45))}[basis]
            getattr(lane.pricing, basis).CopyFrom(money(rate))
            flat.append({"lane": lane.lane_id, "basis": basis, "rate": rate,
                         "w_from": None, "w_to": None})
        for row in flat:
            if row["lane"] == lane.lane_id:
                row.update(oc=oc, op=op, dc=dc, dp=dp, minimum=minimum)
    return card, flat


def load(pairs: list[tuple[str, str, str, str]], rng: random.Random) -> shipment_pb2.Shipment:
    oc, op, dc, dp = rng.choice(pairs)

    def stop(country: str, prefix: str) -> stop_pb2.Stop:
        return stop_pb2.Stop(address=postal_address_pb2.PostalAddress(
            region_code=country, postal_code=prefix + f"{rng.randint(0, 9999):04d}"))

    return shipment_pb2.Shipment(
        pickup=stop(oc, op), delivery=stop(dc, dp), weight_kg=rng.randint(200, 20000),
        pallets=rng.randint(1, 30), distance_km=rng.randint(100, 1200),
        mode=carrier_pb2.MODE_FTL,
        accessorials=[shipment_pb2.RequestedAccessorial(code=carrier_pb2.ACCESSORIAL_CODE_LIFTGATE),
                      shipment_pb2.RequestedAccessorial(
                          code=carrier_pb2.ACCESSORIAL_CODE_DETENTION, minutes=180)])


REFERENCE_SQL = """
SELECT c.id, min(p.price) AS price
FROM bench_ref.carriers c
LEFT JOIN LATERAL (
  SELECT (greatest(coalesce(l.minimum, 0),
                   CASE l.basis WHEN 'flat' THEN l.rate WHEN 'per_km' THEN l.rate * $5
                                WHEN 'per_kg' THEN l.rate * $6 ELSE l.rate * $7 END)
          * 1.10 + c.liftgate + c.detention * 1) AS price
  FROM bench_ref.lanes l
  WHERE l.carrier_id = c.id AND l.o_country = $1 AND l.d_country = $3
    AND left($2, length(l.o_prefix)) = l.o_prefix AND left($4, length(l.d_prefix)) = l.d_prefix
    AND (l.w_from IS NULL OR ($6 >= l.w_from AND (l.w_to IS NULL OR $6 < l.w_to)))
) p ON true
WHERE c.client_id = $8 AND c.active
GROUP BY c.id
"""


async def seed(stub: Any, admin: asyncpg.Connection, args: argparse.Namespace,
               pairs: list[tuple[str, str, str, str]], rng: random.Random) -> None:
    metadata = (("x-cartage-client-id", SHIPPER),)
    await admin.execute("""
        CREATE SCHEMA bench_ref;
        CREATE TABLE bench_ref.carriers (id text PRIMARY KEY, client_id text, active bool,
                                         liftgate numeric, detention numeric);
        CREATE TABLE bench_ref.lanes (carrier_id text, lane_id text, o_country text,
            o_prefix text, d_country text, d_prefix text, basis text, rate numeric,
            minimum numeric, w_from numeric, w_to numeric);
        CREATE INDEX ON bench_ref.lanes (carrier_id, o_country, d_country);""")
    for n in range(args.carriers):
        carrier = await stub.CreateCarrier(pb.CreateCarrierRequest(carrier=carrier_pb2.Carrier(
            display_name=f"Bench Carrier {n:03d}",
            scac="BN" + chr(65 + n % 26) + chr(65 + n // 26 % 26),
            modes=[carrier_pb2.MODE_FTL], equipment=[carrier_pb2.EQUIPMENT_DRY_VAN],
            insurance_expiry=FAR, authority_expiry=FAR)), metadata=metadata, timeout=30)
        card, flat = make_card(rng.sample(pairs, args.lanes), rng)
        await stub.CreateRateCard(pb.CreateRateCardRequest(parent=carrier.name, rate_card=card),
                                  metadata=metadata, timeout=30)
        cid = carrier.name.removeprefix("carriers/")
        lift = Decimal(card.accessorials[0].amount.units)
        det = Decimal(card.accessorials[1].amount.units)
        await admin.execute("INSERT INTO bench_ref.carriers VALUES ($1, $2, true, $3, $4)",
                            cid, SHIPPER, lift, det)
        await admin.executemany(
            "INSERT INTO bench_ref.lanes VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
            [(cid, r["lane"], r["oc"], r["op"], r["dc"], r["dp"], r["basis"], r["rate"],
              r["minimum"], r["w_from"], r["w_to"]) for r in flat])
    await admin.execute("ANALYZE")


async def quote_phase(stubs: list[Any], args: argparse.Namespace, loads: list[Any],
                      cpu: CpuMeter) -> dict[str, Any]:
    metadata = (("x-cartage-client-id", SHIPPER),)
    incomplete = 0
    considered: list[int] = []

    async def worker(i: int, rec: Recorder, running: Any) -> None:
        nonlocal incomplete
        stub, n = stubs[i % len(stubs)], i
        while running():
            n += args.callers
            request = pb.QuoteRatesRequest(shipment=loads[n % len(loads)],
                                           fuel_price_index="1.62")
            response = await rec.call(stub.QuoteRates(request, metadata=metadata, timeout=30))
            if response is not None and rec.measuring:
                total = len(response.quotes) + len(response.exclusions)
                considered.append(len(response.quotes))
                if total != args.carriers:
                    incomplete += 1

    rec, elapsed, share = await run_phase("QuoteRates", worker, args.callers, args.warmup,
                                          args.seconds, cpu)
    return {"quotes": rec.ok, "quotes_per_s": round(rec.ok / elapsed, 1),
            **summary_ms(rec.latencies), "errors": dict(rec.errors),
            "error_samples": rec.error_samples, "responses_missing_carriers": incomplete,
            "mean_quoted_carriers": round(sum(considered) / max(1, len(considered)), 1),
            "cores": share}


async def reference_phase(url: str, args: argparse.Namespace, loads: list[Any],
                          cpu: CpuMeter) -> dict[str, Any]:
    pool = await asyncpg.create_pool(url, min_size=args.callers, max_size=args.callers)
    rows_seen: list[int] = []
    try:
        async def worker(i: int, rec: Recorder, running: Any) -> None:
            n = i
            while running():
                n += args.callers
                s = loads[n % len(loads)]
                rows = await rec.call(pool.fetch(
                    REFERENCE_SQL, s.pickup.address.region_code, s.pickup.address.postal_code,
                    s.delivery.address.region_code, s.delivery.address.postal_code,
                    Decimal(int(s.distance_km)), Decimal(int(s.weight_kg)), Decimal(s.pallets),
                    SHIPPER))
                if rows is not None and rec.measuring:
                    rows_seen.append(len(rows))

        rec, elapsed, share = await run_phase("raw asyncpg (one query)", worker, args.callers,
                                              args.warmup, args.seconds, cpu)
    finally:
        await pool.close()
    return {"queries": rec.ok, "queries_per_s": round(rec.ok / elapsed, 1),
            **summary_ms(rec.latencies), "errors": dict(rec.errors),
            "rows_per_query": min(rows_seen) if rows_seen else 0, "cores": share}


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    pairs = region_pairs(100, rng)
    loads = [load(pairs, rng) for _ in range(2000)]
    postgres = Postgres(tmp / "pg", free_port(), durable=False)
    nats_server = Nats(tmp / "js", free_port())
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    results: dict[str, Any] = {}
    try:
        _owned.append(postgres)
        postgres.start()
        _owned.append(nats_server)
        nats_server.start()
        nc = await nats.connect(nats_server.url)
        await ensure_stream(nc.jetstream(), "ORDER", ["order.>"])  # the stream it consumes
        await nc.close()
        port = free_port()
        env = {**os.environ, "DATABASE_URL": postgres.url, "NATS_URL": nats_server.url,
               "CARRIER_GRPC_ADDRESS": f"127.0.0.1:{port}", "LOG_LEVEL": "WARNING",
               "CARRIER_WORKERS": str(args.workers)}
        service = start_service(env, port, tmp / "carrier.log", ("services.carrier",),
                                "carrier service")
        _owned.append(service)
        assert postgres.process is not None and nats_server.process is not None
        cpu = CpuMeter(service.pid, postgres.process.pid, nats_server.process.pid)
        channels = await open_channels(port, args.channels)
        admin = await asyncpg.connect(postgres.url)
        try:
            stubs = [carrier_service_pb2_grpc.CarrierServiceStub(ch) for ch in channels]
            started = time.perf_counter()
            await seed(stubs[0], admin, args, pairs, rng)
            results["seed_seconds"] = round(time.perf_counter() - started, 1)
            log(f"seeded {args.carriers} carriers x {args.lanes} lanes in "
                f"{results['seed_seconds']}s")
            results["quote_rates"] = await quote_phase(stubs, args, loads, cpu)
            log(f"QuoteRates: {results['quote_rates']}")
            results["raw_asyncpg_reference"] = await reference_phase(postgres.url, args, loads,
                                                                     cpu)
            log(f"reference: {results['raw_asyncpg_reference']}")
        finally:
            await admin.close()
            for channel in channels:
                await channel.close()
    finally:
        stop_owned()
    return results


def verdict(results: dict[str, Any]) -> dict[str, bool]:
    quotes = results.get("quote_rates", {})
    checks = {
        "quotes_per_s": quotes.get("quotes_per_s", 0) >= TARGETS["quotes_per_s_min"],
        "p99_ms": quotes.get("p99_ms", float("inf")) <= TARGETS["p99_ms_max"],
        "every_carrier_considered": quotes.get("quotes", 0) > 0
        and quotes.get("responses_missing_carriers", 1) == 0 and not quotes.get("errors"),
    }
    return {**checks, "all": all(checks.values())}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.carrier")
    parser.add_argument("--carriers", type=int, default=200)
    parser.add_argument("--lanes", type=int, default=25)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return report.run("carrier", args.out, lambda tmp: bench(args, tmp), config={
        "carriers": args.carriers, "lanes_per_carrier": args.lanes,
        "lanes": args.carriers * args.lanes, "callers": args.callers, "seconds": args.seconds,
        "warmup_seconds": args.warmup, "workers": args.workers, "channels": args.channels},
                      targets=TARGETS, verdict=verdict)


if __name__ == "__main__":
    sys.exit(main())
