"""The fleets seen across the hosts' `verify` documents (`./tasks.sh verify`): per fleet endpoint,
every host's share and live workers, their sum against the endpoint's cap, the members of its group
that gave no report, and the hosts that call its URL without being in its group.

A pure function of the documents (verify.run's, by host) and the inventory's groups: the run's
hosts and network are not touched here.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .settings import url_without_credentials
from .terminal import clean

DEFAULT_PORTS = {"http": 80, "https": 443}


def normal_url(url: str) -> str:
    """A base URL as two hosts' settings are compared: no credentials, scheme and host lowercased,
    the default port written out, no trailing / or /v1 (the server's root, as the pass probes it)."""
    text = url_without_credentials(url.strip())
    try:
        parts = urlsplit(text)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return text.rstrip("/").lower()
    hostname = parts.hostname or ""
    hostname = f"[{hostname}]" if ":" in hostname else hostname
    path = parts.path.rstrip("/").removesuffix("/v1").rstrip("/")
    return f"{parts.scheme.lower()}://{hostname}{f':{port}' if port else ''}{path}"


def _members(documents: dict[str, dict]) -> dict[tuple[str, str], list[tuple[str, dict]]]:
    """(fleet, endpoint) -> (host, its entry) of every host document that reports one."""
    found: dict[tuple[str, str], list[tuple[str, dict]]] = {}
    for name, document in sorted(documents.items()):
        for entry in document.get("fleets") or []:
            found.setdefault((entry["fleet"], entry["endpoint"]), []).append((name, entry))
    return found


def _missing(
    group: list[str] | None, reporting: set[str], documents: dict[str, dict], endpoint: str
) -> list[dict]:
    """The group's hosts that said nothing of the endpoint, and why."""
    missing = []
    for name in group or []:
        if name in reporting:
            continue
        document = documents.get(name)
        if document is None:
            why = "not in this run (--limit or --hosts left it out): its share and workers are not counted"
        elif document.get("error"):
            why = f"no report: {document['error']}"
        else:
            why = f"its settings name no fleet for endpoint {endpoint}: run site.yml there"
        missing.append({"host": name, "why": why})
    return missing


def _strays(urls: list[str], members: set[str], documents: dict[str, dict]) -> list[dict]:
    """Hosts of the run whose boards or Hermes homes call any of `urls` (normal_url's) without
    being members: while the members disagree on the URL, each of theirs may be the endpoint's."""
    strays = []
    for name, document in sorted(documents.items()):
        if name in members:
            continue
        for item in document.get("endpoint_urls") or []:
            url = normal_url(item.get("url", ""))
            if url in urls:
                strays.append({"host": name, "where": item.get("where", ""), "url": url})
    return strays


def fleets(documents: dict[str, dict], groups: dict[str, list[str]] | None = None) -> list[dict]:
    """One summary per fleet endpoint reported by any host. `groups`: the inventory's groups (host
    names by group), to name the members that gave no report; without it the members are the hosts
    that report the fleet."""
    groups = groups or {}
    summaries = []
    for (fleet, endpoint), reported in sorted(_members(documents).items()):
        entries = [entry for _, entry in reported]
        group = groups.get(fleet)
        members = set(group) if group is not None else {name for name, _ in reported}
        caps = sorted({entry["cap"] for entry in entries})
        cap = min(caps)
        urls = sorted({normal_url(entry["url"]) for entry in entries if entry.get("url")})
        hosts = [
            {
                "host": name,
                "index": entry["index"],
                "share": entry["share"],
                "min_share": entry["min_share"],
                "workers": entry["workers"],
                "mode": entry.get("mode", ""),
            }
            for name, entry in reported
        ]
        workers = sum(item["workers"] for item in hosts)
        shares = sum(item["share"] for item in hosts)
        problems, warnings = [], []
        if workers > cap:
            problems.append(f"{workers} live workers on the endpoint together, over its cap of {cap}")
        if len(caps) > 1:
            problems.append(
                f"the hosts disagree on the endpoint's cap ({', '.join(map(str, caps))}): run site.yml"
            )
        if len(urls) > 1:
            problems.append(
                f"the hosts name different URLs for the endpoint ({', '.join(urls)}): run site.yml"
            )
        indexes = [item["index"] for item in hosts]
        taken = sorted({index for index in indexes if indexes.count(index) > 1})
        if taken:
            problems.append(
                f"two hosts hold the same place ({', '.join(str(i + 1) for i in taken)}) and admit in "
                "the same slice: run site.yml on every host of the group"
            )
        sizes = sorted({entry["hosts"] for entry in entries})
        if group is not None and sizes != [len(group)]:
            warnings.append(
                f"the settings count {'/'.join(map(str, sizes))} hosts, the group has {len(group)}: "
                "run site.yml on every host of the group"
            )
        if shares > cap:
            warnings.append(
                f"the static shares add up to {shares}, over the cap of {cap}: while the endpoint "
                "reports no load the fleet may run that many (more hosts than the cap, or floors that leave "
                "a host nothing)"
            )
        strays = _strays(urls, members, documents)
        for stray in strays:
            at = f" at {stray['url']}" if len(urls) > 1 else ""  # the members name several
            warnings.append(
                f"{stray['host']} calls the endpoint{at} ({stray['where']}) but is not in group {fleet}: "
                f"add it to the inventory group {fleet} and run site.yml, or its workers are outside the cap"
            )
        missing = _missing(group, {name for name, _ in reported}, documents, endpoint)
        if group is None:
            warnings.append(
                f"the inventory's group {fleet} is not known here: members that gave no report are not named"
            )
        summaries.append(
            {
                "fleet": fleet,
                "endpoint": endpoint,
                "cap": cap,
                "url": urls[0] if urls else "",
                "hosts": hosts,
                "workers": workers,
                "shares": shares,
                "missing": missing,
                "strays": strays,
                "problems": problems,
                "warnings": warnings,
                "ok": not problems,
            }
        )
    return summaries


def render(summaries: list[dict]) -> str:
    lines = []
    for summary in summaries:
        mark = "ok" if summary["ok"] else "NOT SAFE"
        lines.append(
            f"== fleet {summary['fleet']}, endpoint {summary['endpoint']} ({summary['url'] or 'no url'}): "
            f"{mark}, live workers {summary['workers']} of cap {summary['cap']}, shares {summary['shares']}"
        )
        for item in sorted(summary["hosts"], key=lambda item: (item["index"], item["host"])):
            mode = item["mode"] or "not logged yet"
            lines.append(
                f"  host {item['host']}: place {item['index'] + 1}, share {item['share']}, "
                f"floor {item['min_share']}, live workers {item['workers']}, mode {mode}"
            )
        lines += [f"  missing {item['host']}: {item['why']}" for item in summary["missing"]]
        lines += [f"  PROBLEM: {problem}" for problem in summary["problems"]]
        lines += [f"  WARNING {warning}" for warning in summary["warnings"]]
    # Host names, URLs and modes come from the hosts' reports: each line shown as text.
    return "\n".join(clean(line) for line in lines)
