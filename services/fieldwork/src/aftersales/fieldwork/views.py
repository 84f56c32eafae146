"""The customer's view of a service report: one self-contained HTML page (no scripts, no external files)
with the work, the parts, the signature and the hash that lets anyone check the report is unchanged."""

from __future__ import annotations

import base64
import html

from aftersales.fieldwork.reports import ServiceReport, Signature, SignatureKind, strokes_of, verify

STYLE = (
    "body{font-family:sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem}"
    "code{word-break:break-all}.ok{color:#060}.bad{color:#a00}"
)


def _signature_html(signature: Signature) -> str:
    if signature.kind == SignatureKind.PNG:
        data = base64.b64encode(signature.data).decode()
        return f"<img alt='signature' style='max-width:24rem' src='data:image/png;base64,{data}'>"
    lines = "".join(
        "<polyline fill='none' stroke='black' stroke-width='2' points='"
        + " ".join(f"{x:g},{y:g}" for x, y in stroke)
        + "'/>"
        for stroke in strokes_of(signature)
    )
    svg = "<svg xmlns='http://www.w3.org/2000/svg' width='400' height='160' viewBox='0 0 400 160'>"
    return f"{svg}{lines}</svg>"


def report_page(report: ServiceReport) -> str:
    """Return the report as an HTML page, every value escaped."""
    e = html.escape
    check = verify(report)
    parts = "".join(
        f"<tr><td>{e(p.part_id)}</td><td>{p.quantity}</td><td>{e(p.location_id)}</td></tr>"
        for p in report.parts
    )
    photos = "".join(f"<li>{e(ref)}</li>" for ref in report.photos)
    if report.signature is not None:
        signed = (
            f"<p>Signed by {e(report.signature.signer_name)} at {e(str(report.signed_at))}</p>"
            f"{_signature_html(report.signature)}"
        )
    else:
        signed = "<p>Not signed yet (draft).</p>"
    state = (
        "<span class='ok'>unchanged since signing</span>"
        if check.matches
        else ("<span class='bad'>not signed, or changed since signing</span>")
    )
    return (
        "<!doctype html><html lang='zh'><head><meta charset='utf-8'>"
        f"<title>服务报告 Service report {e(report.id)}</title><style>{STYLE}</style></head><body>"
        f"<h1>服务报告 Service report {e(report.id)}</h1>"
        f"<p>Ticket {e(report.ticket_id)} · technician {e(report.technician_id)}</p>"
        + (f"<p>Corrects report {e(report.supersedes)}</p>" if report.supersedes else "")
        + f"<h2>Work performed</h2><p>{e(report.work_performed)}</p>"
        f"<p>Resolution: {e(report.resolution_code or '')}</p>"
        f"<h2>Parts used</h2><table><tr><th>part</th><th>quantity</th><th>from</th></tr>{parts}</table>"
        f"<h2>Photos</h2><ul>{photos}</ul>"
        f"<h2>Signature</h2>{signed}"
        f"<h2>Integrity</h2><p>SHA-256 <code>{e(report.content_sha256 or '')}</code>: {state}</p>"
        "</body></html>"
    )
