"""The table ``make bench`` prints and writes to docs/benchmarks.md (run.py)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().split()[1]
    return (
        f"{os.cpu_count()} cores ({cpu}), {int(mem) // 1024 // 1024} GiB, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def report(results: dict[str, Any], quick: bool) -> str:
    r1, r2, r3, r4, r5, r6 = (results[k] for k in ("W1", "W2", "W3", "W4", "W5", "W6"))
    c1, c2 = results["closed"]["W1"], results["closed"]["W2"]
    hub1, ref1, ceil1 = r1["hub"], r1["reference"], r1["ceiling"]
    hub3, ref3 = r3["hub"]["kib_per_connection"], r3["reference"]["kib_per_connection"]
    hub4 = r4["hub"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` on {time.strftime('%Y-%m-%d')}: {machine()}."
        + (" (quick run)" if quick else ""),
        "The hub and the asyncio reference relay (benchmarks/reference_relay.py) ran in the"
        " same run on the same machine; ratios are hub / reference. W1 and W2 (open and"
        " closed) ran in rounds (three; one with --quick), the servers taking turns: each"
        " figure is the median round's, and every round's is beside it. W2's senders send"
        " a round of messages that is not timed (`--warmup 1`) before its 10 s.",
        "",
        "| workload | trio-chat hub | asyncio reference | ratio | target |",
        "| --- | --- | --- | --- | --- |",
        f"| W1 throughput (100 clients, 10 senders) | {hub1['deliveries_per_s']:,.0f}/s,"
        f" lost {hub1['lost']}, dup {hub1['duplicates']}{_mps(hub1)}"
        f" | {ref1['deliveries_per_s']:,.0f}/s{_mps(ref1)} |"
        f" {hub1['deliveries_per_s'] / ref1['deliveries_per_s']:.1f}x | >= 10x, no loss |",
        f"| W1 ceiling: a relay that only copies bytes (benchmarks/ceiling_relay.py)"
        f" | hub at {hub1['deliveries_per_s'] / ceil1['deliveries_per_s']:.0%} of it"
        f" | {ceil1['deliveries_per_s']:,.0f}/s, lost {ceil1['lost']}"
        f" (load tool CPU {ceil1['tool_cpu_percent']:.0f}%){_mps(ceil1)}"
        f" | {ceil1['deliveries_per_s'] / ref1['deliveries_per_s']:.1f}x | the most any relay"
        " shows here |",
        f"| W2 latency p50 / p99 at arrival (200 clients x 1 msg/s; as the tool read it)"
        f" | {_lat(r2['hub'])} | {_lat(r2['reference'])} |"
        f" {r2['hub']['latency_ms']['p99'] / r2['reference']['latency_ms']['p99']:.2f}x |"
        " p99 <= 3 ms |",
        f"| W1 on a closed group (TLS 1.3 + secret) | {c1['deliveries_per_s']:,.0f}/s,"
        f" lost {c1['lost']}, dup {c1['duplicates']}{_mps(c1)}"
        f" | (open hub: {hub1['deliveries_per_s']:,.0f}/s)"
        f" | {c1['deliveries_per_s'] / hub1['deliveries_per_s']:.2f}x of open |"
        " report the cost |",
        f"| W2 on a closed group: p50 / p99 at arrival (as read) | {_lat(c2)} | (open hub: p99"
        f" {r2['hub']['latency_ms']['p99']:.2f} ms) |"
        f" {c2['latency_ms']['p99'] / r2['hub']['latency_ms']['p99']:.2f}x of open | p99 <= 3 ms |",
        f"| W3 RSS per idle connection (2000 clients) | {hub3:.1f} KiB | {ref3:.1f} KiB |"
        f" {hub3 / max(ref3, 0.01):.2f}x | <= 8 KiB |",
        f"| W3 concurrent clients accepted | {r3['hub']['concurrent_clients']}"
        f" of {r3['hub']['concurrent_wanted']} | | | 10000 |",
        f"| W4 throughput kept with one silent reader | {hub4['throughput_kept']:.0%}"
        f" (cut off: {hub4['silent_client_cut']}; RSS {hub4['rss_start_kib'] // 1024}"
        f" -> peak {hub4['rss_peak_kib'] // 1024} MiB; p99"
        f" {hub4['base']['latency_ms']['p99']:.0f} -> {hub4['silent']['latency_ms']['p99']:.0f} ms)"
        f" | {r4['reference']['throughput_kept']:.0%}, lost {r4['reference']['silent']['lost']}"
        " | | >= 90%, cut off, bounded |",
        f"| W5 mesh of 20 peers: to all, p50 / p99 | {r5['p50_ms']:.1f} / {r5['p99_ms']:.1f} ms |"
        " | | p99 <= 50 ms |",
        f"| W6 one peer relaying signed events: per CPU-second, own / relayed (checked)"
        f" | {r6['own']['events_per_cpu_s']:,.0f} / {r6['relayed']['events_per_cpu_s']:,.0f}"
        f" ({r6['check_us_per_event']:.0f} µs a check) | | | report |",
        *_bus_rows(results.get("bus", {})),
        "",
        "Latency runs from a message's send (as its bytes go to the sender's kernel) to its"
        " arrival at each client's socket: the time the kernel stamped on the segment that"
        " brought it (SO_TIMESTAMPNS). The"
        " load tool reads for all clients in one thread, so the last of a message's 199"
        " copies is read some 199 reads after it came; 199 real clients would each read"
        " their own at once. The figures in parentheses are those reads' times: what this"
        " one process saw, the tool's own reading included (chat/benchrecv.py).",
        "",
        *bus_estimate(results.get("bus", {})),
        "",
        "Where a relaying peer's time goes (W6, py-spy, share of samples, inclusive):",
        "",
        *(
            [f"- `{name}`: {share}%" for name, share in r6["profile"]]
            if isinstance(r6["profile"], list)
            else [f"- {r6['profile']}"]
        ),
        "",
        "Raw figures:",
        "",
        "```json",
        json.dumps(results, indent=1),
        "```",
    ]
    return "\n".join(lines) + "\n"


def _lat(result: dict[str, Any]) -> str:
    """``p50 / p99 ms`` at arrival, then the p99 of the tool's reads."""
    arrival, read = result["latency_ms"], result.get("read_latency_ms") or {}
    shown = f"{arrival['p50']:.2f} / {arrival['p99']:.2f} ms"
    shown += f" (read: p99 {read['p99']:.2f})" if "p99" in read else ""
    rounds = result.get("rounds", [])
    return shown + (
        f"; p99 of each round: {', '.join(f'{r:.2f}' for r in rounds)}" if len(rounds) > 1 else ""
    )


def _mps(result: dict[str, Any]) -> str:
    """Every round's throughput, in millions a second (the median is shown)."""
    rounds = result.get("rounds", [])
    if len(rounds) < 2:
        return ""
    return f" (rounds: {', '.join(f'{r / 1e6:.2f}' for r in rounds)} M/s)"


def _bus_rows(bus: dict[str, Any]) -> list[str]:
    """Two hubs on one Redis beside one hub alone (the bus workload)."""
    if "skipped" in bus or not bus:
        return [f"| hubs on one Redis | {bus.get('skipped', 'not run')} | | | report |"]
    one1, two1, one2, two2 = (
        bus[k] for k in ("W1 one hub", "W1 two hubs", "W2 one hub", "W2 two hubs")
    )
    return [
        f"| W1 through two hubs on one Redis (clients split) | {two1['deliveries_per_s']:,.0f}/s,"
        f" lost {two1['lost']}, dup {two1['duplicates']};"
        f" {two1['events_through_bus_per_s']:,.0f} events/s through the bus"
        f" | (one hub: {one1['deliveries_per_s']:,.0f}/s)"
        f" | {two1['deliveries_per_s'] / one1['deliveries_per_s']:.2f}x of one | report |",
        f"| W2 through two hubs on one Redis: p50 / p99 | {two2['latency_ms']['p50']:.2f}"
        f" / {two2['latency_ms']['p99']:.2f} ms | (one hub: p99"
        f" {one2['latency_ms']['p99']:.2f} ms) | | report |",
    ]


def bus_estimate(bus: dict[str, Any]) -> list[str]:
    """How many clients N hubs carry, from this run's per-hub and bus figures."""
    if "skipped" in bus or not bus:
        return []
    per_hub = bus["W1 one hub"]["deliveries_per_s"]
    through = bus["W1 two hubs"]["events_through_bus_per_s"]
    lines = [
        "How many clients N hubs carry, estimated from this run. A hub delivers at most"
        f" D = {per_hub:,.0f} events/s to its clients (W1, one hub), and the bus path"
        f" carried at most B = {through:,.0f} distinct events/s (W1 through two hubs, where"
        " each hub checks every event of the other's clients: a relayed event, 98-120 µs;"
        " both hubs, Redis and the load tool shared these 2 cores). In a group where each"
        " of N x c clients (c per hub) writes one message every s seconds, the group makes"
        " E = N c / s events/s, and each hub delivers E c of them: c <= sqrt(D s / N) and"
        " E <= B. With a message every 10 s per client:",
        "",
        "| hubs N | clients per hub c (D bound) | clients in all | events/s E (bus bound B) |",
        "| --- | --- | --- | --- |",
    ]
    for hubs in (1, 2, 4, 8):
        per = int((per_hub * 10 / hubs) ** 0.5)
        events = hubs * per / 10
        if events > through:  # the bus bound: fewer clients
            per = int(through * 10 / hubs)
            events = hubs * per / 10
        lines.append(f"| {hubs} | {per:,} | {hubs * per:,} | {events:,.0f} |")
    lines += [
        "",
        "A chattier group (a message a second each) divides these by about 3 (the D bound)"
        " or 10 (the B bound). Each added hub adds its own clients' fan-out capacity; what"
        " every hub pays for is checking every other hub's events, so the bus path's B"
        " bounds a deployment, not a hub.",
    ]
    return lines
