"""Guard decision latency on real-chat prompts: what the guardrail adds to a served turn.

    .venv/bin/python bench/guard_latency.py                  # embedded SmolLM2, CPU, 100 dev-set snapshots
    .venv/bin/python bench/guard_latency.py --n 30 --members 1 2 4

On the first `--n` snapshots of the real-chat dev set (`../shared/data/dev_real_v1.jsonl` beside the
project when present, else the packaged `real-chats-v1`), with adapters of the real shape and random
weights (bench/serve_load.py makes them; a decision costs the same whatever the weights), measures in
one process, snapshot by snapshot in turn so that drift hits every variant alike:

- the base model's first token (one prefill forward pass) — what a plain server pays before its first
  token;
- the guard decision of `personaguard serve` (Engine.decide) with 1 adapter, from the state the
  previous turn of the same persona leaves (its adapter still on: a lone guardrail writes its own
  quiet turns too). Target: <= 1.15x the base first token. Also, untargeted, the same decision
  switched in from the base model (a persona's first turn after another persona's);
- the decision with each `--members` count, from the base model active, as a stack's quiet turn
  leaves it (the decision pays for switching its adapters on);
- a full turn (decision + reply of up to `--reply-tokens` tokens, Engine.turn) against a two-pass
  pipeline that first classifies the prompt with a separate model of the same size (one prefill
  forward pass of a second copy of the base) and then lets the base model write a reply of the same
  number of tokens. Target: <= 0.6x.

Writes a JSON result; the last line printed is the one-adapter decision / base first token ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import random_adapters  # noqa: E402  (a sibling bench script)

DEV = REPO.parent / "shared" / "data" / "dev_real_v1.jsonl"


def snapshots(data: str | None, n: int):
    from personaguard.data.eval_sets import resolve_data
    from personaguard.schema import read_jsonl

    path = resolve_data(data) if data else (DEV if DEV.is_file() else resolve_data("real-chats-v1"))
    rows = read_jsonl(path)
    if len(rows) < n:
        raise SystemExit(f"--n {n}: {path} has only {len(rows)} snapshots")
    return path, rows[:n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--data", help="snapshot JSONL (default: the dev set beside the project, else real-chats-v1)")
    ap.add_argument("--n", type=int, default=100, help="snapshots")
    ap.add_argument("--members", type=int, nargs="+", default=[2, 4, 8], help="stack sizes to time besides one adapter")
    ap.add_argument("--reply-tokens", type=int, default=48)
    ap.add_argument("--turns", type=int, default=30, help="snapshots used for the full-turn comparison (slow part)")
    ap.add_argument(
        "--merge", default="auto", choices=["auto", "on", "off"], help="serve's merge_lone_adapter (off: LoRA layers unfolded)"
    )
    ap.add_argument("--out", default="bench/results/guard_latency.json")
    args = ap.parse_args(argv)

    import torch

    from personaguard.config import ServeConfig
    from personaguard.models import load_model, resolve_model
    from personaguard.prompt import prompt_ids
    from personaguard.schema import write_text_atomic
    from personaguard.serve.engine import Engine

    resolve_model(args.model)
    path, snaps = snapshots(args.data, args.n)
    sizes = sorted({1, *args.members})
    names = tuple(f"member{k}" for k in range(max(sizes)))
    work = Path(tempfile.mkdtemp(prefix="guard_latency_"))
    # built on a thread of its own, which ends with its OpenMP team: the engine's model thread then runs alone
    with ThreadPoolExecutor(1) as once:
        once.submit(random_adapters, args.model, work / "adapters", names=names).result()
    cfg = ServeConfig(adapters_dir=str(work / "adapters"), model=args.model, personas_dir=None, merge_lone_adapter=args.merge)
    engine = Engine(cfg)
    classifier, _ = engine.run(load_model, args.model)  # the two-pass pipeline's separate model of the same size
    prompts = [prompt_ids(engine.tokenizer, s, engine.max_prompt_tokens) for s in snaps]
    dev = next(engine.model.parameters()).device
    engine.run(classifier.to, dev)

    def ids_tensor(ids):
        return torch.tensor([ids], device=dev)

    # every torch op on the engine's model thread, as the server runs them (serve/engine.py: one OpenMP team)
    def base_first_token(ids):
        def timed():
            engine._activate([])
            t0 = time.perf_counter()
            with torch.no_grad():
                engine.model(input_ids=ids_tensor(ids), logits_to_keep=1).logits[0, -1].argmax().item()  # .item() waits for a GPU
            return time.perf_counter() - t0

        return engine.run(timed)

    def decision(ids, k, start):
        engine.run(engine._activate, start)  # untimed: the state the previous turn leaves
        t0 = time.perf_counter()
        engine.decide(ids, list(names[:k]))
        return time.perf_counter() - t0

    def start(k):
        """What the persona's previous quiet turn left active."""
        writer = engine.quiet_writer(list(names[:k]))
        return [writer] if writer else []

    base_first_token(prompts[0]), decision(prompts[0], max(sizes), [])  # warm-up
    times: dict[str, list[float]] = {"base": [], "decision_1_switched": [], **{f"decision_{k}": [] for k in sizes}}
    for ids in prompts:
        times["base"].append(base_first_token(ids))
        times["decision_1_switched"].append(decision(ids, 1, []))
        for k in sizes:
            times[f"decision_{k}"].append(decision(ids, k, start(k)))

    def our_turn(snap) -> tuple[float, int]:
        engine.lock.acquire()  # turn() takes it; wait here for any earlier reply thread to let go
        engine.lock.release()
        t0 = time.perf_counter()
        turn = engine.turn(snap, [names[0]], args.reply_tokens)
        "".join(turn.pieces)
        return time.perf_counter() - t0, turn.completion_tokens

    def two_pass(ids, tokens: int) -> float:
        engine.lock.acquire()
        try:
            return engine.run(two_pass_timed, ids, tokens)
        finally:
            engine.lock.release()

    def two_pass_timed(ids, tokens: int) -> float:
        engine._activate([])
        t0 = time.perf_counter()
        with torch.no_grad():
            classifier(input_ids=ids_tensor(ids), logits_to_keep=1).logits[0, -1].argmax().item()  # the classifier
            inputs = ids_tensor(ids)
            engine.model.generate(
                input_ids=inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=tokens,
                min_new_tokens=tokens,  # the same reply length as our turn wrote
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=engine.tokenizer.pad_token_id,
            )
        return time.perf_counter() - t0

    our_turn(snaps[0])  # warm-up
    turn_times, pass_times, tokens = [], [], []
    for snap, ids in list(zip(snaps, prompts))[: args.turns]:
        t, made = our_turn(snap)
        turn_times.append(t)
        tokens.append(made)
        pass_times.append(two_pass(ids, max(made, 1)))

    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "args": vars(args),
        "data": str(path),
        "device": str(next(engine.model.parameters()).device),
        "mean_prompt_tokens": sum(map(len, prompts)) / len(prompts),
        "median_s": med,
        "decision_1_vs_base": med["decision_1"] / med["base"],
        "decision_1_switched_vs_base": med["decision_1_switched"] / med["base"],
        **{f"decision_{k}_vs_1": med[f"decision_{k}"] / med["decision_1"] for k in sizes if k != 1},
        "turn_median_s": statistics.median(turn_times),
        "two_pass_median_s": statistics.median(pass_times),
        "turn_vs_two_pass": statistics.median(turn_times) / statistics.median(pass_times),
        "mean_reply_tokens": sum(tokens) / len(tokens),
    }
    print(f"{len(prompts)} snapshots from {path} (mean prompt {result['mean_prompt_tokens']:.0f} tokens), {result['device']}")
    print(f"base model first token: {med['base'] * 1000:.1f} ms (median)")
    print(
        f"guard decision, 1 member switched in from the base model: {med['decision_1_switched'] * 1000:.1f} ms "
        f"= {result['decision_1_switched_vs_base']:.2f}x base"
    )
    for k in sizes:
        extra = "" if k == 1 else f" = {result[f'decision_{k}_vs_1']:.2f}x one adapter"
        print(f"guard decision, {k} member(s): {med[f'decision_{k}'] * 1000:.1f} ms{extra}")
    print(
        f"full turn ({result['mean_reply_tokens']:.0f} reply tokens on average, {len(turn_times)} turns): "
        f"{result['turn_median_s'] * 1000:.0f} ms vs two-pass {result['two_pass_median_s'] * 1000:.0f} ms "
        f"= {result['turn_vs_two_pass']:.2f}x"
    )
    write_text_atomic(args.out, json.dumps(result, indent=1))
    print(f"guard decision (one adapter) / base first token: {result['decision_1_vs_base']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
