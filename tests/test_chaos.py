"""The chaos scenario of :mod:`chaos` in the default suite, at a bounded size.

Eight real peers chat for 30 s while peers are SIGKILLed and restarted and
others are stopped long enough for their links to die; afterwards every
survivor must hold every surviving incarnation's messages once and in order
(§5, §6). The counts are printed (``pytest -s``) and are part of every
assertion message, with the driver's log and where the transcripts are.
"""

from __future__ import annotations

from pathlib import Path

import trio
from chaos import ChaosConfig, run_chaos


async def test_mesh_delivers_everything_once_in_order_through_kills_and_cuts(
    tmp_path: Path,
) -> None:
    config = ChaosConfig(peers=8, seconds=30.0, settle=25.0, keep=tmp_path)
    with trio.fail_after(80):
        report = await run_chaos(config)
    print(report.summary())
    counts = report.counts
    about = f"{report.details()}\ntranscripts in {tmp_path}"
    assert report.ok, about
    assert counts.kills >= 2, about
    assert counts.cuts >= 2, about
    # The stops really cut links (each one with none is a problem above),
    # and what a stopped survivor missed meanwhile came by catch-up (§6).
    assert counts.links_cut >= 1, about
    assert counts.caught_up > 0 or counts.cut_survivors == 0, about
    assert counts.survivors == config.peers, about
    assert counts.incarnations == config.peers + counts.kills, about
    # Every survivor held at least every survivor's messages.
    assert counts.kept > 0, about
    assert counts.deliveries >= counts.survivors * counts.kept, about
