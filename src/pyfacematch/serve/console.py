"""The operator page at ``/console``: server-rendered HTML and a little plain JavaScript.

What it shows and does (for the people who run the service and answer customer service):
each served gallery's size and health (state, index tuning, erasure pending, thresholds), request
rates and latency per endpoint over the last minute (from the service's own Prometheus
metrics), an identity's consent records and their withdrawal (an opt-out request), verification
of the audit trail's hash chain, and, when an embedder is configured, a photo upload that shows
the ranked matches.

Access: an API key with the ``admin`` scope. The page has a login form; the key goes into an
``HttpOnly``, ``SameSite=Strict`` cookie limited to ``/console`` (``Secure`` under TLS), never
into the page or its script. The page's actions call ``/console/api/…`` endpoints, which accept
that cookie only together with the header ``X-PFM-Console: 1`` (a cross-site form cannot set
it; no CORS is served): CSRF protection without a token. Every action requires ``admin`` on the
gallery and is recorded in the audit trail under the key's id. No external resource: the script
and style are served by the service and a Content-Security-Policy forbids anything else.
"""

from __future__ import annotations

import html
import time
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry

__all__ = [
    "CONSOLE_CSP",
    "CONSOLE_HEADER",
    "COOKIE",
    "CONSOLE_CSS",
    "CONSOLE_JS",
    "RateWindow",
    "login_page",
    "render_page",
]

#: Cookie holding the operator's key (HttpOnly, SameSite=Strict, Path=/console).
COOKIE = "pfm_console"
#: Header the console's script sends with every API call (CSRF guard).
CONSOLE_HEADER = "x-pfm-console"
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

_E = html.escape


class RateWindow:
    """Request rates and latency quantiles per endpoint over a sliding window of snapshots.

    Each :meth:`sample` reads the counters of ``pfm_requests`` and the buckets of
    ``pfm_request_seconds``; rates and quantiles come from the difference between now and the
    oldest snapshot in the window (quantiles: the upper edge of the bucket that holds them, as
    Prometheus' ``histogram_quantile`` would interpolate within it).
    """

    def __init__(self, registry: CollectorRegistry, window_s: float = 60.0) -> None:
        self.registry = registry
        self.window_s = float(window_s)
        self._snaps: deque[tuple[float, dict[str, float], dict[str, list[tuple[float, float]]]]]
        self._snaps = deque()
        self._start = time.monotonic()

    def _read(self) -> tuple[dict[str, float], dict[str, list[tuple[float, float]]]]:
        counts: dict[str, float] = {}
        buckets: dict[str, dict[float, float]] = {}
        for fam in self.registry.collect():
            if fam.name == "pfm_requests":
                for s in fam.samples:
                    if s.name.endswith("_total"):
                        ep = s.labels["endpoint"]
                        counts[ep] = counts.get(ep, 0.0) + s.value
            elif fam.name == "pfm_request_seconds":
                for s in fam.samples:
                    if s.name.endswith("_bucket"):
                        le = float(s.labels["le"])
                        b = buckets.setdefault(s.labels["endpoint"], {})
                        b[le] = b.get(le, 0.0) + s.value
        return counts, {ep: sorted(b.items()) for ep, b in buckets.items()}

    def sample(self) -> dict[str, Any]:
        """Take a snapshot; return ``{"window_s", "endpoints": {ep: {rate, p50_ms, p99_ms, total}}}``."""
        now = time.monotonic()
        counts, buckets = self._read()
        self._snaps.append((now, counts, buckets))
        while len(self._snaps) > 1 and now - self._snaps[1][0] >= self.window_s:
            self._snaps.popleft()
        t0, c0, b0 = self._snaps[0] if len(self._snaps) > 1 else (self._start, {}, {})
        dt = max(now - t0, 1e-3)
        out: dict[str, Any] = {}
        for ep in sorted(counts):
            if ep in ("metrics", "/metrics", "other"):
                continue
            n = counts[ep] - c0.get(ep, 0.0)
            prev = dict(b0.get(ep, []))
            cum = [(le, v - prev.get(le, 0.0)) for le, v in buckets.get(ep, [])]
            out[ep] = {
                "rate": n / dt,
                "p50_ms": _quantile(cum, 0.50),
                "p99_ms": _quantile(cum, 0.99),
                "total": int(counts[ep]),
            }
        return {"window_s": round(dt, 1), "endpoints": out}


def _quantile(cum: list[tuple[float, float]], q: float) -> float | None:
    """Upper bucket edge (ms) holding quantile ``q`` of cumulative bucket counts; None if empty."""
    if not cum or cum[-1][1] <= 0:
        return None
    want = q * cum[-1][1]
    for le, v in cum:
        if v >= want:
            return None if le == float("inf") else le * 1000.0
    return None


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{_E(title)}</title>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        '<link rel=stylesheet href="/console/console.css"></head>'
        f"<body>{body}</body></html>"
    )


def login_page(error: str | None = None) -> str:
    """The login form (no data of any gallery)."""
    err = f"<p class=error id=login-error role=alert>{_E(error)}</p>" if error else ""
    return _page(
        "pyfacematch console — sign in",
        "<main class=login><h1>pyfacematch console</h1>"
        "<p>Sign in with an API key that has the <code>admin</code> scope.</p>"
        f"{err}"
        '<form method=post action="/console/login" id=login-form>'
        "<label>API key <input type=password name=token id=token autocomplete=off required>"
        "</label> <button type=submit id=login>Sign in</button></form></main>",
    )


def _thresholds(t: dict[str, Any]) -> str:
    parts = []
    for kind in ("fmr", "fpir"):
        rec = t.get(kind)
        if rec is not None:
            parts.append(f"{kind.upper()} {rec.get('target')}: {rec.get('threshold'):.4f}")
    return _E("; ".join(parts) or "not calibrated")


def render_page(
    *,
    key_id: str | None,
    galleries: list[dict[str, Any]],
    rates: dict[str, Any],
    embedder: dict[str, Any],
    ready: bool,
) -> str:
    """The console page, rendered on the server from the current state.

    Parameters
    ----------
    key_id : str or None
        The signed-in key (None: the server runs without keys, loopback only).
    galleries : list of dict
        Per gallery the operator may administer: ``name``, ``state``, and when open
        ``identities``, ``templates``, ``dim``, ``backend``, ``tuned``, ``search``,
        ``erasure_pending``, ``thresholds``.
    rates : dict
        :meth:`RateWindow.sample`.
    embedder : dict
        ``state`` (off / loading / ready / failed …), ``name``, ``dim``.
    ready : bool
        /readyz would answer 200.
    """
    who = (
        f'signed in as <b id=key-id>{_E(key_id)}</b> <form method=post action="/console/logout" '
        "class=inline><button id=logout>Sign out</button></form>"
        if key_id
        else "<b id=key-id>no API keys (loopback)</b>"
    )
    rows = []
    for g in galleries:
        n = _E(g["name"])
        if "identities" not in g:
            rows.append(
                f'<tr data-gallery="{n}"><td>{n}</td><td colspan=6 class=warn>'
                f"{_E(g['state'])}</td></tr>"
            )
            continue
        health = "ok" if g["tuned"] and not g["erasure_pending"] else "attention"
        rows.append(
            f'<tr data-gallery="{n}"><td>{n}</td>'
            f"<td class=num data-field=identities>{g['identities']}</td>"
            f"<td class=num data-field=templates>{g['templates']}</td>"
            f"<td>{g['dim']}</td><td>{_E(str(g['backend']))} ({_E(str(g['search']))})</td>"
            f'<td class="{health}" data-field=health>{_E(g["state"])}, '
            f"{'tuned' if g['tuned'] else 'not tuned'}"
            f"{', erasure pending' if g['erasure_pending'] else ''}</td>"
            f"<td>{_thresholds(g['thresholds'])}</td></tr>"
        )
    rate_rows = []
    for ep, r in rates["endpoints"].items():

        def ms(v: float | None) -> str:
            return "–" if v is None else f"≤ {v:g}"

        rate_rows.append(
            f'<tr data-endpoint="{_E(ep)}"><td>{_E(ep)}</td><td class=num>{r["rate"]:.2f}</td>'
            f"<td class=num>{ms(r['p50_ms'])}</td><td class=num>{ms(r['p99_ms'])}</td>"
            f"<td class=num>{r['total']}</td></tr>"
        )
    options = "".join(
        f'<option value="{_E(g["name"])}">{_E(g["name"])}</option>' for g in galleries
    )
    emb_state = str(embedder.get("state", "off"))
    if emb_state == "ready":
        photo = (
            "<section id=photo><h2>Who is this? (photo)</h2>"
            f"<p>Embedder <b>{_E(str(embedder.get('name')))}</b> ({embedder.get('dim')}-d). "
            "The photo is searched like a terminal's request and recorded in the audit trail "
            "under your key.</p>"
            f"<form id=photo-form><label>Gallery <select name=gallery>{options}</select></label> "
            "<label>Photo <input type=file name=image id=photo-file accept=image/* required>"
            "</label> <label>Top <input type=number name=k value=5 min=1 max=100></label> "
            "<button type=submit id=photo-submit>Search</button></form>"
            "<p id=photo-status role=status></p>"
            "<table id=photo-results><thead><tr><th>#</th><th>identity</th><th>score</th>"
            "<th>accepted</th></tr></thead><tbody></tbody></table></section>"
        )
    else:
        photo = (
            "<section id=photo><h2>Who is this? (photo)</h2><p id=photo-off>Photo search is "
            f"not available: embedder {_E(emb_state)} (start the server with "
            "<code>--embedder dlib</code>).</p></section>"
        )
    body = (
        f"<header><h1>pyfacematch console</h1><div>{who} · service "
        f'<b id=ready class="{"ok" if ready else "warn"}">{"ready" if ready else "starting"}</b>'
        "</div></header><main>"
        "<section id=galleries><h2>Galleries</h2><table><thead><tr><th>gallery</th>"
        "<th>identities</th><th>templates</th><th>dim</th><th>index</th><th>health</th>"
        f"<th>thresholds</th></tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
        "<section id=traffic><h2>Requests</h2>"
        f"<p>Last <span id=window>{rates['window_s']}</span> s, from <code>/metrics</code>; "
        "latency as the histogram bucket holding the quantile (ms). Refreshed every 5 s.</p>"
        "<table id=rates><thead><tr><th>endpoint</th><th>req/s</th><th>p50 ms</th>"
        f"<th>p99 ms</th><th>total</th></tr></thead><tbody>{''.join(rate_rows)}</tbody></table>"
        "</section>"
        "<section id=consent><h2>Consent and opt-out</h2>"
        f"<form id=consent-form><label>Gallery <select name=gallery>{options}</select></label> "
        "<label>Identity <input name=identity id=consent-identity required></label> "
        "<button type=submit id=consent-lookup>Look up</button></form>"
        "<p id=consent-status role=status></p>"
        "<table id=consent-records><thead><tr><th>purpose</th><th>granted</th><th>source</th>"
        "<th>expires</th><th>active</th><th></th></tr></thead><tbody></tbody></table>"
        "<p><button id=withdraw-all hidden>Withdraw all consent (opt-out: erases the "
        "identity)</button></p></section>"
        "<section id=audit><h2>Audit trail</h2>"
        f"<form id=audit-form><label>Gallery <select name=gallery>{options}</select></label> "
        "<button type=submit id=audit-verify>Verify the hash chain</button></form>"
        "<p id=audit-status role=status></p></section>"
        f"{photo}</main>"
        '<script src="/console/console.js"></script>'
    )
    return _page("pyfacematch console", body)


CONSOLE_CSS = """
body{font:15px/1.4 system-ui,sans-serif;margin:0 2rem 2rem;color:#222}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}
table{border-collapse:collapse;margin:.4rem 0}th,td{padding:.25rem .6rem;border-bottom:1px solid #ddd;
text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#0a6b2d}.warn,.attention,.error{color:#a4330d}form.inline{display:inline}
.login{max-width:32rem;margin:4rem auto}input,select,button{font:inherit}
"""

CONSOLE_JS = r"""
"use strict";
const H = {"X-PFM-Console": "1"};
function $(s) { return document.querySelector(s); }
function cell(tr, text) { const td = document.createElement("td"); td.textContent = text; tr.appendChild(td); return td; }
async function call(method, url, body) {
  const r = await fetch(url, {method, headers: H, body, credentials: "same-origin"});
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) {
    const why = data && (data.detail || data.title) ? (data.detail || data.title) : r.statusText;
    throw new Error(r.status + ": " + why);
  }
  return data;
}
function base(form) {
  return "/console/api/galleries/" + encodeURIComponent(form.gallery.value);
}
function when(t) { return t == null ? "never" : new Date(t * 1000).toISOString().replace(".000", ""); }

async function refreshRates() {
  try {
    const s = await call("GET", "/console/api/stats");
    $("#window").textContent = s.rates.window_s;
    const tb = $("#rates tbody"); tb.replaceChildren();
    for (const [ep, r] of Object.entries(s.rates.endpoints)) {
      const tr = document.createElement("tr"); tr.dataset.endpoint = ep;
      cell(tr, ep);
      cell(tr, r.rate.toFixed(2)).className = "num";
      cell(tr, r.p50_ms == null ? "–" : "≤ " + r.p50_ms).className = "num";
      cell(tr, r.p99_ms == null ? "–" : "≤ " + r.p99_ms).className = "num";
      cell(tr, String(r.total)).className = "num";
      tb.appendChild(tr);
    }
    for (const g of s.galleries) {
      const row = document.querySelector('#galleries tr[data-gallery="' + CSS.escape(g.name) + '"]');
      if (row && g.identities != null) {
        row.querySelector("[data-field=identities]").textContent = g.identities;
        row.querySelector("[data-field=templates]").textContent = g.templates;
      }
    }
    $("#ready").textContent = s.ready ? "ready" : "starting";
  } catch (e) { /* signed out or server stopping: keep the last figures */ }
}

async function lookup(ev) {
  if (ev) ev.preventDefault();
  const f = $("#consent-form"), st = $("#consent-status"), tb = $("#consent-records tbody");
  const id = f.identity.value.trim();
  tb.replaceChildren(); $("#withdraw-all").hidden = true;
  try {
    const d = await call("GET", base(f) + "/identities/" + encodeURIComponent(id) + "/consent");
    st.textContent = d.records.length ? d.records.length + " consent record(s) for " + id
                                      : "no consent record for " + id;
    for (const r of d.records) {
      const tr = document.createElement("tr"); tr.dataset.purpose = r.purpose;
      cell(tr, r.purpose); cell(tr, when(r.granted_at)); cell(tr, r.source);
      cell(tr, when(r.expires_at)); cell(tr, r.active ? "yes" : "expired");
      const b = document.createElement("button");
      b.textContent = "Withdraw"; b.className = "withdraw";
      b.addEventListener("click", () => withdraw(r.purpose));
      cell(tr, "").appendChild(b);
      tb.appendChild(tr);
    }
    $("#withdraw-all").hidden = d.records.length === 0;
  } catch (e) { st.textContent = e.message; }
}

async function withdraw(purpose) {
  const f = $("#consent-form"), st = $("#consent-status"), id = f.identity.value.trim();
  const what = purpose == null ? "ALL consent of " + id + " (opt-out: the identity is erased)"
                               : "consent of " + id + " for " + purpose;
  if (!window.confirm("Withdraw " + what + "?")) return;
  let url = base(f) + "/identities/" + encodeURIComponent(id) + "/consent";
  if (purpose != null) url += "?purpose=" + encodeURIComponent(purpose);
  try {
    const d = await call("DELETE", url);
    await lookup(null);
    st.textContent = d.opted_out ? id + " opted out: erased, re-enrollment refused until new consent"
                                 : "withdrawn " + d.withdrawn + "; remaining: " + d.remaining.join(", ");
  } catch (e) { st.textContent = e.message; }
}

async function verifyAudit(ev) {
  ev.preventDefault();
  const f = $("#audit-form"), st = $("#audit-status");
  st.textContent = "verifying…";
  try {
    const d = await call("POST", base(f) + "/audit/verify");
    st.className = d.ok ? "ok" : "error";
    st.textContent = d.ok ? "intact: " + d.records + " records, chain verified"
                          : "BROKEN at record " + JSON.stringify(d.first_bad);
  } catch (e) { st.className = "error"; st.textContent = e.message; }
}

async function photo(ev) {
  ev.preventDefault();
  const f = $("#photo-form"), st = $("#photo-status"), tb = $("#photo-results tbody");
  tb.replaceChildren(); st.textContent = "searching…";
  const fd = new FormData();
  fd.append("image", f.image.files[0]);
  fd.append("k", f.k.value);
  fd.append("faces", "largest");
  try {
    const d = await call("POST", base(f) + "/identify", fd);
    const r = d.results[0];
    r.candidates.forEach((c, i) => {
      const tr = document.createElement("tr"); tr.dataset.identity = c.identity;
      cell(tr, String(i + 1)); cell(tr, c.identity);
      cell(tr, c.score == null ? "–" : c.score.toFixed(4));
      cell(tr, i === 0 && r.identity != null ? "yes" : "");
      tb.appendChild(tr);
    });
    st.textContent = (r.identity != null ? "match: " + r.identity : "no match above the threshold")
      + " (" + r.face.faces_found + " face(s) found)";
  } catch (e) { st.textContent = e.message; }
}

$("#consent-form").addEventListener("submit", lookup);
$("#withdraw-all").addEventListener("click", () => withdraw(null));
$("#audit-form").addEventListener("submit", verifyAudit);
if ($("#photo-form")) $("#photo-form").addEventListener("submit", photo);
setInterval(refreshRates, 5000);
"""
