"""``runner sim``: serve the simulator in the foreground until Ctrl-C (or ``duration`` seconds)."""

from __future__ import annotations

import asyncio
import contextlib

import click

from runner.sim.server import SimConfig, Simulator

__all__ = ["serve"]


def serve(config: SimConfig, host: str, port: int, duration: float | None = None) -> None:
    async def main() -> None:
        sim = Simulator(config)
        url = await sim.start(host, port)
        click.echo(
            f"simulating {config.tier} at {url} (window {config.window:g}s, enforced by {config.enforcement}, headers "
            f"{config.headers}, background {config.background:.0%}); export OPENAI_BASE_URL={url}",
            err=True,
        )
        try:
            if duration is None:
                await asyncio.Event().wait()
            else:
                await asyncio.sleep(duration)
        finally:
            await sim.stop()
            click.echo(f"served: {sim.stats.as_dict()}", err=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
