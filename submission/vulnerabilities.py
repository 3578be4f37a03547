"""The known-vulnerability assessment of the SBOM's components, against the OSV database
(osv.dev, which aggregates the Python Packaging Advisory Database and GitHub's advisories).

One POST of every component and version to the OSV batch query API. The default build does not use
the network: with the check off, or with the source unreachable, the result says "not assessed"
and why, with the date and the source it would have asked; it never reports "no vulnerability" for
a check that did not run.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime, timezone

#: The OSV batch query endpoint (https://google.github.io/osv.dev/post-v1-querybatch/).
OSV_BATCH_URL = "https://api.osv.dev/v1/querybatch"
SOURCE_NAME = "OSV (osv.dev)"
OFF_REASON = ("the known-vulnerability check is switched off in this build's parameters; the default "
              "build runs without network access")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def not_assessed(reason: str, url: str) -> dict:
    return {"assessed": False, "reason": reason, "source": SOURCE_NAME, "url": url, "checked_utc": _now()}


def assess(components: dict[str, str], *, check: bool, url: str = OSV_BATCH_URL, timeout_s: float = 10.0) -> dict:
    """{name: version} of PyPI packages -> the assessment: `assessed`, `source`, `url`,
    `checked_utc`, and `reason` (not assessed) or `components_checked`, `findings` (one entry per
    component with known vulnerabilities: `component`, `version`, `ids`) and
    `components_with_findings`."""
    if not check:
        return not_assessed(OFF_REASON, url)
    names = sorted(components)
    body = json.dumps({"queries": [{"package": {"name": n, "ecosystem": "PyPI"}, "version": components[n]}
                                   for n in names]}).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer = json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        why = getattr(e, "reason", None) or e
        return not_assessed(f"the vulnerability source could not be reached ({why})", url)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return not_assessed(f"the vulnerability source answered with something other than JSON ({e})", url)
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list) or len(results) != len(names):
        return not_assessed(f"the vulnerability source answered {len(results) if isinstance(results, list) else 'no'} "
                            f"results for {len(names)} queries", url)
    findings = []
    for name, result in zip(names, results):
        ids = sorted({v["id"] for v in (result or {}).get("vulns", []) if isinstance(v, dict) and "id" in v})
        if ids:
            findings.append({"component": name, "version": components[name], "ids": ids})
    return {"assessed": True, "source": SOURCE_NAME, "url": url, "checked_utc": _now(),
            "components_checked": len(names), "components_with_findings": len(findings), "findings": findings}
