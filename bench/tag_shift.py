"""Benchmark: how far does each stack member move the tag's first-token log-probability, and does the sum add up?

    .venv/bin/python bench/tag_shift.py --adapters runs/a/adapters/politics runs/a/adapters/meeting \
        --data runs/a/data/politics_vary_all/test.jsonl --data runs/a/data/meeting_vary_all/test.jsonl [--n 20]

A summed stack starts its reply with the tag where the tag's first token is the likeliest first token
under all members together; roughly, each member adds its own shift to the base model's log-probability
of it. (The rest of the tag is near-certain once its first token is there, so the guard score, the
probability of the whole tag, saturates and is not the quantity that adds up.) This reads that
log-probability off one guard pass per setting (no adapter, each member alone, all members) over
up to --n items of each label of the data files, and prints per label the median log-probability of
each setting, each member's median shift from the base model, the sum's shift next to the sum of the
members' shifts, and how many items each setting's greedy reply would tag. Members trained with
ORPO's neutral rows push the tag down outside their own trigger (a negative shift on the other
labels), which makes the stack lose tags; members that raise it a little everywhere make the stack
fire on neutral turns (docs/research-log.md, "Members that add up").
"""

from __future__ import annotations

import argparse
import statistics


def main() -> None:
    from personaguard.adapters import load_stack, use_adapters
    from personaguard.inference import guard_pass
    from personaguard.models import EMBEDDED, LoadOptions, load_model
    from personaguard.prompt import prompt_ids
    from personaguard.schema import Snapshot, read_jsonl

    ap = argparse.ArgumentParser()
    ap.add_argument("--adapters", nargs="+", required=True, help="Member adapter folders (named after their folders).")
    ap.add_argument("--data", action="append", required=True, help="Labelled Snapshot JSONL; repeatable.")
    ap.add_argument("--n", type=int, default=20, help="Items per label at most.")
    ap.add_argument("--model", default=EMBEDDED)
    ap.add_argument("--tag", default="<guard>")
    ap.add_argument("--max-prompt-tokens", type=int, default=224)
    ap.add_argument("--precision", default="fp32")
    args = ap.parse_args()

    model, tok = load_model(args.model, LoadOptions("auto", args.precision, False))
    model, names = load_stack(model, args.adapters)
    by_label: dict[str, list[Snapshot]] = {}
    seen: set[str] = set()
    for path in args.data:
        for s in read_jsonl(path, Snapshot):
            if s.id not in seen and len(by_label.setdefault(s.label, [])) < args.n:
                seen.add(s.id)
                by_label[s.label].append(s)
    settings = {"base": [], **{n: [n] for n in names}, "sum": names}
    print(
        "| label | n | setting | median log P(tag's first token) | median shift vs base | greedy tags |\n|---|---|---|---|---|---|"
    )
    for label, items in sorted(by_label.items()):
        prompts = [prompt_ids(tok, s, args.max_prompt_tokens) for s in items]
        logp, greedy = {}, {}
        for setting, active in settings.items():
            with use_adapters(model, active):
                g = guard_pass(model, tok, prompts, args.tag)
            logp[setting] = g.first_logps
            greedy[setting] = sum(g.greedy)
        base = logp["base"]
        members_sum = [sum(logp[n][i] - base[i] for n in names) for i in range(len(items))]
        for setting in settings:
            shift = statistics.median(x - b for x, b in zip(logp[setting], base))
            extra = f" (members' shifts summed: {statistics.median(members_sum):+.1f})" if setting == "sum" else ""
            print(
                f"| {label} | {len(items)} | {setting} | {statistics.median(logp[setting]):.1f} | {shift:+.1f}{extra} | "
                f"{greedy[setting]} |"
            )


if __name__ == "__main__":
    main()
