"""What the console's lock story costs a job (``init({log})``, ``console.py``).

The client tells the lock's story on the console: at ``"lock"`` (the default) two lines
per session job (the lock taken, the lock released), at ``"verbose"`` also a line per
request checked; at ``"off"`` none, and what is left on a request's path is one attribute
read (``Routing.check``). Measured here: sequential job latency (upload -> invert ->
download, each job on a new image, session affinity) in ONE page, its ``log`` level
changed by ``init()`` between blocks of jobs, the levels' order alternating per round, so
every level sees the same server, page and moment. Playwright listens to the page's
console (as DevTools does when open), so a written line is also sent out of the page: the
figure is the cost with a console attached, the one a user reading it pays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LEVELS = ("off", "lock", "verbose")

# n sequential jobs, each on an image of its own made before its timing starts; ms each
TIMED_JOBS = """async ([w, n]) => {
  const out = [];
  for (let i = 0; i < n; i++) {
    const blob = await window.bench.fresh();
    const t = performance.now();
    await window.bench.ours(w, blob);
    out.push(performance.now() - t);
  }
  return out;
}"""


def log_cost(browser: Any, base: str, server: str, workflow: dict, jobs_page: Callable,
             *, rounds: int, per_block: int, warmup: int = 2) -> dict[str, list[float]] | None:
    """Job latencies (ms) per ``log`` level, from ``rounds`` rounds of ``per_block`` jobs
    per level; ``jobs_page`` is ``run._jobs_page`` (a booted page ready for jobs)."""
    ctx = browser.new_context()
    try:
        page, _ = jobs_page(ctx, base, server, reference=False)

        def level(name: str) -> None:
            page.evaluate("([s, log]) => window.comfy.init({servers: [s], log})", [server, name])

        for name in LEVELS:  # every level's code has run before any timing
            level(name)
            page.evaluate(TIMED_JOBS, [workflow, warmup])
        lat: dict[str, list[float]] = {name: [] for name in LEVELS}
        for r in range(rounds):
            for name in (LEVELS if r % 2 == 0 else LEVELS[::-1]):
                level(name)
                lat[name] += page.evaluate(TIMED_JOBS, [workflow, per_block])
        return lat
    except Exception as exc:  # the page changed shape: the block is left out, not the run
        print(f"  log cost not measured: {exc}")
        return None
    finally:
        ctx.close()


def log_cost_report(lat: dict[str, list[float]], fmt: Callable, stats: Callable
                    ) -> tuple[list[str], tuple[str, str, str]]:
    """BENCHMARKS.md's block and its headline row: each level against ``"off"``."""
    off = stats(lat["off"])
    lines = ["## Console logging cost (`init({log})`)", "",
             f"Sequential job latency in one page, session affinity, each job on a new image, "
             f"the `log` level changed by `init()` between blocks ({len(lat['off'])} jobs per "
             "level, the levels' order alternating per round). `\"lock\"` (the default) "
             "writes two lines per job (the lock taken and released), `\"verbose\"` also one "
             "per request checked; Playwright listens to the console as open DevTools do:",
             "", "| `log` | job latency | / `\"off\"` |", "|---|---|---|"]
    for name in LEVELS:
        s = stats(lat[name])
        lines.append(f"| `\"{name}\"` | {fmt(s)} | {s['median'] / off['median']:.2f}× |")
    lock, verbose = stats(lat["lock"]), stats(lat["verbose"])
    lines += ["", f"Medians: `\"lock\"` {lock['median'] - off['median']:+.1f} ms per job, "
              f"`\"verbose\"` {verbose['median'] - off['median']:+.1f} ms against `\"off\"`, "
              f"whose jobs spread {off['min']:.1f}–{off['max']:.1f} ms. At `\"off\"` a "
              "request's path keeps one attribute read (`Routing.check`) and no line is "
              "formatted.", ""]
    head = ("Job latency, console lock story on (`log: \"lock\"`, the default) / off",
            f"{lock['median'] / off['median']:.2f}× `log: \"off\"`",
            f"{lock['median']:.1f} vs {off['median']:.1f} ms")
    return lines, head
