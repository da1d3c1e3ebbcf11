"""Retry storm: amplification, goodput and recovery for no retries, naive retries and ours.

For each trigger mode and client kind, a fresh client process runs one storm against the
storm server (its own process); the server's attempt record and the client's call record are
then joined here:

- ``amplification``: attempts the server received for the calls started during the trigger,
  divided by those calls (1.0 = no retries reached the server; below 1 when a breaker kept
  calls off the network);
- ``share_at_max_attempts``: share of those calls whose every allowed attempt reached the server;
- ``goodput``: successful calls per second, and the share of calls that succeeded, per phase;
- ``recovery_s``: time from the end of the trigger to the start of the first bin from which
  every later bin has at least ``recovered_share`` of its calls succeeding.
"""

from __future__ import annotations

import collections
import math
from typing import Any

from benchmarks import procs, storm_fleet
from benchmarks.config import StormConfig
from benchmarks.storm_server import storm_server_main


def run_one(
    server: procs.ServerHandle, kind: str, mode: str, config: StormConfig
) -> dict[str, Any]:
    """One storm: a fresh process with ``kind`` of client against ``server``, trigger ``mode``.

    The client process is new for every storm, so no breaker or budget state carries over;
    the server keeps nothing between storms but its record, which arming the trigger clears.
    """
    record = procs.run_in_process(storm_fleet.run_fleet, kind, server.target, mode, config)
    return analyse(record, server.request("attempts"), config)


def _share(values: list[bool]) -> float:
    return sum(values) / len(values) if values else math.nan


def analyse(
    record: dict[str, Any], attempts: list[tuple[float, float]], config: StormConfig
) -> dict[str, Any]:
    """The storm's figures from the client's calls and the server's attempts."""
    calls: list[tuple[float, float, bool]] = record["calls"]
    t0, start, end, stop = (record["t0"], record["trigger_start"], record["trigger_end"],
                            record["end"])
    per_call = collections.Counter(call_start for _, call_start in attempts)
    in_trigger = [c for c in calls if start <= c[0] < end]
    phases = {"before": (t0, start), "trigger": (start, end), "after": (end, stop)}

    goodput = {}
    success_share = {}
    for name, (low, high) in phases.items():
        started = [c for c in calls if low <= c[0] < high]
        success_share[name] = _share([c[2] for c in started])
        goodput[name] = sum(1 for c in calls if c[2] and low <= c[1] < high) / (high - low)

    bins = []
    edge = end
    while edge < stop - 1e-9:
        outcomes = [c[2] for c in calls if edge <= c[0] < edge + config.bin_s]
        load = sum(1 for a in attempts if edge <= a[0] < edge + config.bin_s)
        bins.append((edge - end, _share(outcomes), load / config.bin_s))
        edge += config.bin_s
    recovered_at = None
    for index in range(len(bins)):
        later = [share for _, share, _ in bins[index:] if not math.isnan(share)]
        if later and min(later) >= config.recovered_share:
            recovered_at = bins[index][0]
            break

    trigger_attempts = sum(per_call[c[0]] for c in in_trigger)
    at_max = sum(1 for c in in_trigger if per_call[c[0]] >= config.max_attempts)
    load_bins = collections.Counter(int((a[0] - t0) // config.bin_s) for a in attempts)
    return {
        "calls": len(calls),
        "calls_in_trigger": len(in_trigger),
        "attempts": len(attempts),
        "amplification": trigger_attempts / len(in_trigger) if in_trigger else math.nan,
        "amplification_overall": len(attempts) / len(calls) if calls else math.nan,
        "share_at_max_attempts": at_max / len(in_trigger) if in_trigger else math.nan,
        "goodput_per_s": goodput,
        "success_share": success_share,
        "offered_per_s": config.rate,
        "capacity_per_s": config.capacity,
        "peak_attempts_per_s": max(load_bins.values(), default=0) / config.bin_s,
        "client_max_lag_s": record["max_lag_s"],
        "failures": record["failures"],
        "recovered": recovered_at is not None,
        "recovery_s": recovered_at if recovered_at is not None else stop - end,
        "after_bins": [
            {"t_s": round(t, 3), "success_share": share, "attempts_per_s": load}
            for t, share, load in bins
        ],
    }


def run(config: StormConfig, modes: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``{mode: {kind: figures}}`` for every trigger mode and client kind."""
    server_args = [(config.slots, config.queue, config.service_s)]
    with procs.server_processes(storm_server_main, server_args) as handles:
        return {mode: {kind: run_one(handles[0], kind, mode, config)
                       for kind in storm_fleet.KINDS}
                for mode in modes}
