"""``python -m comfyui_devserver``: run N dev servers until SIGINT/SIGTERM.

Prints one ``comfyui-devserver NAME: URL`` line per instance (flushed, so a parent process
can read the ports it got with ``--port 0``), then serves; a signal stops every instance
cleanly (sockets closed, folders deleted) and the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from .group import instance_names
from .server import DevServer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m comfyui_devserver",
                                description="ComfyUI-compatible dev/test servers")
    p.add_argument("--instances", type=int, default=1, help="how many servers (default 1)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0,
                   help="first port; instance i gets port+i (0 = free ports)")
    p.add_argument("--cors-origin", default=None,
                   help="like ComfyUI's --enable-cors-header ('*' or an origin)")
    p.add_argument("--max-upload-size", type=float, default=100,
                   help="upload limit in MiB (default 100)")
    p.add_argument("--node-delay", type=float, default=0.0, help="seconds per executed node")
    p.add_argument("--progress-steps", type=int, default=0,
                   help="simulated sampler steps with previews for blur/invert/scale")
    p.add_argument("--history-gap", type=float, default=0.0005,
                   help="seconds between execution_success and the history write "
                        "(default 0.0005, as recorded from ComfyUI 0.33)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    servers = [
        DevServer(name=name, cors_origin=args.cors_origin,
                  max_upload_size=round(args.max_upload_size * 1024 * 1024),
                  node_delay_s=args.node_delay, progress_steps=args.progress_steps,
                  history_gap_s=args.history_gap)
        for name in instance_names(args.instances)
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for i, server in enumerate(servers):
            await server.start(args.host, args.port + i if args.port else 0)
            print(f"comfyui-devserver {server.name}: {server.url}", flush=True)
        await stop.wait()
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                await server.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.instances < 1:
        print("--instances must be at least 1", file=sys.stderr)
        return 2
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
