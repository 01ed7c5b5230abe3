"""The HTML status page of ``ctseg serve`` at ``/``: readiness, queue, recent jobs and their latencies.

Plain server-side HTML that refreshes itself every few seconds; job ids and timings only, no patient data.
"""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ctseg.serve.app import Service

REFRESH_S = 5
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}
td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}.ok{color:#070}.bad{color:#b00}
.cards{display:flex;gap:1em;margin:1em 0}.card{border:1px solid #ccc;border-radius:6px;padding:.6em 1em}
.card b{display:block;font-size:1.6em}"""


def _fmt_s(value: float | None) -> str:
    return "" if value is None else f"{value:.1f} s"


def render_status(service: Service) -> str:
    """The page's HTML."""
    ready = service.readiness()
    counts = service.queue.counts()
    jobs = service.queue.recent(service.config.recent_jobs)
    totals = [j.finished - j.received for j in jobs if j.state == "done" and j.finished is not None]
    p50, p99 = np.percentile(totals, [50, 99]) if totals else (None, None)
    cards = {
        "ready": f'<span class="{"ok" if ready.ready else "bad"}">{"yes" if ready.ready else "no"}</span>',
        "queued": str(counts.get("queued", 0)),
        "running": str(counts.get("running", 0)),
        "done": str(counts.get("done", 0)),
        "failed": str(counts.get("failed", 0)),
        "P50 latency": _fmt_s(p50) or "-",
        "P99 latency": _fmt_s(p99) or "-",
        "free disk": f"{ready.checks['free_bytes'] / 2**30:.1f} GiB",
    }
    rows = []
    for j in jobs:
        seconds = j.result.get("seconds") or {}
        cls = {"done": "ok", "failed": "bad"}.get(j.state, "")
        rows.append(
            f"<tr><td><code>{j.id[:12]}</code></td><td>{j.source}</td><td>{html.escape(j.model)}</td>"
            f'<td class="{cls}">{j.state}</td><td>{time.strftime("%H:%M:%S", time.localtime(j.created))}</td>'
            + "".join(f"<td>{_fmt_s(seconds.get(k))}</td>" for k in ("read", "infer", "write"))
            + f"<td>{_fmt_s(j.finished - j.received if j.finished else None)}</td>"
            f"<td>{html.escape(j.error[:80])}</td></tr>"
        )
    models = ", ".join(html.escape(n) for n in service.model_names)
    return f"""<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_S}">
<title>ctseg serve</title><style>{STYLE}</style></head><body>
<h1>ctseg serve</h1>
<p>DICOM <code>{html.escape(service.config.ae_title)}</code> on port {service.dicom_port} &middot; models: {models}
&middot; devices: {", ".join(service.models)} &middot; up {(time.time() - service.started_at) / 60:.0f} min</p>
<div class="cards">{"".join(f'<div class="card">{k}<b>{v}</b></div>' for k, v in cards.items())}</div>
<h2>Recent jobs</h2><table><tr><th>job</th><th>source</th><th>model</th><th>state</th><th>created</th>
<th>read</th><th>infer</th><th>write</th><th>total</th><th>error</th></tr>{"".join(rows)}</table>
<p><a href="/docs">API docs</a> &middot; <a href="/metrics">metrics</a> &middot; <a href="/readyz">readiness</a></p>
</body></html>"""
