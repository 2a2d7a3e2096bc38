"""Validation preference metrics: what the odds ratio optimises, measured on rooms it never saw.

Every validation sample's gold answer is scored against its hard negatives through the deployment
(`/v1/score`, the same prompt the model answers with). A pair is ranked right when the gold answer's
log-odds is the higher one.

    preference.accuracy                   share of (gold, negative) pairs ranked right
    preference.margin                     mean log-odds(gold) - log-odds(negative)
    preference.n                          pairs
    preference.<accuracy|margin|n>.<task>                  per task (qa, sqa, existence, caption)
    preference.<accuracy|margin|n>.kind.<negative kind>    per strategy of the negative (text/negatives.py)
"""

from __future__ import annotations

from collections import defaultdict


def score_pairs(client, s: dict) -> dict:
    """The log-odds of a sample's gold answer and of each of its negatives, through `client.score`."""
    candidates = [s["answers"][0], *s["negatives"]]
    got = client.score(
        s["question"],
        candidates,
        scene_id=s["scene_id"],
        situation=s.get("situation") or None,
        pose=s.get("pose") or None,
        object_id=s["object_ids"][0] if s["task"] == "caption" else None,
    )
    odds = {c["text"]: c["log_odds"] for c in got["ranked"]}
    return {
        "sample_id": s["sample_id"],
        "task": s["task"],
        "gold": odds[candidates[0]],
        "negatives": [odds[n] for n in s["negatives"]],
        "kinds": list(s["negative_kinds"]),
    }


def preference_metrics(rows: list[dict]) -> dict[str, float]:
    """Rows of `score_pairs`: accuracy, margin and pair counts, overall, per task and per negative kind."""
    groups: dict[str, list[float]] = defaultdict(list)  # key -> margins
    for r in rows:
        for margin, kind in zip((r["gold"] - n for n in r["negatives"]), r["kinds"]):
            for key in ("", f".{r['task']}", f".kind.{kind}"):
                groups[key].append(margin)
    out: dict[str, float] = {}
    for key in sorted(groups):
        margins = groups[key]
        out[f"preference.accuracy{key}"] = sum(m > 0 for m in margins) / len(margins)
        out[f"preference.margin{key}"] = sum(margins) / len(margins)
        out[f"preference.n{key}"] = len(margins)
    return out


def preference_table(metrics: dict) -> list[str]:
    """Markdown: preference accuracy and margin overall, per task and per negative kind."""
    if "preference.accuracy" not in metrics:
        return []
    keys = [""] + sorted(
        k.removeprefix("preference.n")
        for k in metrics
        if k.startswith("preference.n.") and not k.startswith("preference.n.kind.")
    )
    keys += sorted(k.removeprefix("preference.n") for k in metrics if k.startswith("preference.n.kind."))
    lines = [
        "| hard pairs (validation rooms) | pairs | preference accuracy | log-odds margin |",
        "|---|---:|---:|---:|",
    ]
    for key in keys:
        name = "all" if not key else key[1:].replace("kind.", "negative kind: ")
        lines.append(
            f"| {name} | {metrics[f'preference.n{key}']} | {metrics[f'preference.accuracy{key}']:.3f} | "
            f"{metrics[f'preference.margin{key}']:+.3f} |"
        )
    return lines
