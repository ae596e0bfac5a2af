"""Benchmark: which member rule should a routed stack use? Tag rate kept vs false tags added.

    .venv/bin/python bench/routing_rules.py --run-dir runs/generalisation [--thresholds 0.3,0.5,0.7] \
        [--data ../shared/data/dev_real_v1.jsonl]

Reads a pipeline run (adapters/<guardrail>/ with guard_threshold.json, data/<guardrail>_vary_all/),
runs ONE guard pass per member over the stack's shared items (every member's triggering test items,
all neutral test items) and over the pooled validation splits (and over --data, e.g. real chats labelled per guardrail), then prints, side by side for every
rule, each member's single tag rate / false tag rate (greedy, and with the rule applied to it
alone), the stack's tag rate on that member's items (and its ratio to the greedy single), and the
stack's false tag rate on the neutral items. The tag decision of a routed stack is a
pure function of these guard passes (routing.route), so no reply needs generating.

Rules: greedy (a member fires where its greedy reply would start with the tag), gated (its
calibrated threshold), joint (its threshold recalibrated on the pooled validation splits, as the
`routed_joint` stack method does: metrics.gate_threshold of its own triggering items against every
member's neutral items), greedy & joint, and greedy & p >= t for each --thresholds value.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    from personaguard.adapters import load_stack
    from personaguard.models import EMBEDDED, LoadOptions, load_model
    from personaguard.prompt import prompt_ids
    from personaguard.schema import Snapshot, read_jsonl
    from personaguard.stack.evaluate import shared_items
    from personaguard.stack.routing import alone_passes, gate_thresholds, joint_gate

    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--guardrails", default="politics,expert_opinion,meeting")
    ap.add_argument("--model", default=EMBEDDED)
    ap.add_argument("--thresholds", default="0.3,0.5,0.7")
    ap.add_argument("--max-prompt-tokens", type=int, default=224)
    ap.add_argument("--data", action="append", default=[], help="Extra labelled snapshot JSONL (evaluation only).")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    a = ap.parse_args()
    run, G = Path(a.run_dir), a.guardrails.split(",")
    dirs = [run / "adapters" / g for g in G]
    gate = dict(zip(G, gate_thresholds(dirs)))
    data = {g: run / "data" / f"{g}_vary_all" for g in G}
    splits = {  # validation first: the joint rules are calibrated on it
        "validation": [s for g in G for s in read_jsonl(data[g] / "validation.jsonl", Snapshot)],
        "test": shared_items({g: str(data[g] / "test.jsonl") for g in G}, set(G) | {"none"}, 0),
        **{Path(f).stem: read_jsonl(f, Snapshot) for f in a.data},
    }
    model, tok = load_model(a.model, LoadOptions(precision=a.precision))
    model, names = load_stack(model, dirs)
    rules = {"greedy": lambda sc, gr, g: gr, "gated": lambda sc, gr, g: sc >= gate[g]}
    for t in (float(x) for x in a.thresholds.split(",") if x):
        rules[f"greedy & p>={t}"] = lambda sc, gr, g, t=t: gr and sc >= t
    joint = {}
    for split, snaps in splits.items():
        prompts = [prompt_ids(tok, s, a.max_prompt_tokens) for s in snaps]
        by_name = alone_passes(model, tok, prompts, names, "<guard>", 32)
        passes = {g: by_name[n] for g, n in zip(G, names)}
        if split == "validation":  # routing.joint_thresholds, from the passes already made
            joint = {g: joint_gate(passes[g].scores, [s.label for s in snaps], g) for g in G}
            rules["joint"] = lambda sc, gr, g: gr if joint[g] is None else sc >= joint[g]
            rules["greedy & joint"] = lambda sc, gr, g: gr and (joint[g] is None or sc >= joint[g])
            print(
                "\ngates "
                + "  ".join(f"{g} {gate[g]:.3f}" for g in G)
                + "  |  joint "
                + "  ".join(f"{g} {joint[g]:.3f}" if joint[g] is not None else f"{g} -" for g in G)
            )
        neutral = [i for i, s in enumerate(snaps) if s.label == "none"]
        print(f"\n{split}: {len(snaps)} items, {len(neutral)} neutral")
        for name, fires in rules.items():
            fired = [any(fires(passes[g].scores[i], passes[g].greedy[i], g) for g in G) for i in range(len(snaps))]
            cells = []
            for g in G:
                own = [i for i, s in enumerate(snaps) if s.label == g]
                rate = lambda idx, f: sum(f(i) for i in idx) / max(len(idx), 1)  # noqa: E731
                greedy = rate(own, lambda i: passes[g].greedy[i])
                alone = lambda i: fires(passes[g].scores[i], passes[g].greedy[i], g)  # noqa: E731
                stack = rate(own, lambda i: fired[i])
                cells.append(
                    f"{g} greedy {greedy:.3f}/{rate(neutral, lambda i: passes[g].greedy[i]):.3f} "
                    f"rule {rate(own, alone):.3f}/{rate(neutral, alone):.3f} -> {stack:.3f} ({stack / max(greedy, 1e-9):.2f})"
                )
            print(f"  {name:>18}: " + "  ".join(cells) + f"  stack false {sum(fired[i] for i in neutral) / len(neutral):.3f}")


if __name__ == "__main__":
    main()
