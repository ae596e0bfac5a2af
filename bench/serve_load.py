"""Load on `personaguard serve` over loopback: concurrent clients, mixed guardrail sets and personas.

    python bench/serve_load.py                       # 32 clients, 96 requests, embedded SmolLM2, CPU
    python bench/serve_load.py --clients 8 --requests 24 --max-tokens 8

It gives the embedded model three LoRA adapters of the real shape with random weights (named like the
built-in guardrails; their decisions are arbitrary but deterministic, which is all a load test needs),
two personas, and starts `personaguard serve` as a subprocess on a free 127.0.0.1 port. Every request
(message x guardrail set x persona) is first answered alone, one at a time; then all of them are sent
by N concurrent streaming clients. A concurrent answer whose guard decision or text differs from its
answer alone is cross-talk (it was answered with another request's adapters). Reports requests/s,
p50/p95 time to the first chunk (the guard decision) and to the full reply, errors and cross-talk.

Then, in this process on the same model and prompts: the time to the guard decision of one adapter,
and of 2 and 3 members, against the base model's time to its first token for the same prompt (one
prefill forward pass); the target is <= 1.2x for one adapter. The last line is that ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GUARDRAILS = ("politics", "expert_opinion", "meeting")
SETS = [["politics"], ["expert_opinion"], ["meeting"], ["politics", "meeting"], list(GUARDRAILS), []]
MESSAGES = [
    "who are you voting for this year?",
    "I think I sprained my ankle, should I take ibuprofen?",
    "we should grab coffee sometime, what's your number?",
    "I baked sourdough today and it actually rose!",
    "what did you think of the last episode?",
    "my landlord wants to keep my deposit, is that legal?",
]
PERSONAS = {
    "maya": "name: Maya\ntraits: [warm and curious, works in a small bakery]\nguardrails: [politics]\n",
    "rex": "name: Rex\ntraits: [gruff but kind blacksmith]\nguardrails: [politics, expert_opinion, meeting]\n",
}


def random_adapters(model: str, root: Path, seed: int = 0, names: tuple[str, ...] = GUARDRAILS) -> Path:
    """Adapter folders of the real shape with random LoRA weights, described like trained ones.

    Pure noise never makes a model write the tag, and then every reply comes from the base model and a
    request answered with the wrong adapters would go unnoticed. So each adapter also gets one rank of
    its last layer's MLP output pointed at the tag's first token along a random direction: it fires on
    the prompts whose hidden state leans that way. Each adapter's direction is drawn until it fires on
    a third to two thirds of the bench's messages."""
    import torch
    from peft import LoraConfig, get_peft_model

    from personaguard.adapters import write_info
    from personaguard.guardrails import Guardrail, registry
    from personaguard.inference import tag_token_ids
    from personaguard.models import LoadOptions, load_model
    from personaguard.prompt import prompt_ids
    from personaguard.schema import Snapshot

    # built and saved on the CPU in fp32 wherever the bench then runs: the weights are drawn on the CPU
    base, tok = load_model(model, LoadOptions(device="cpu", precision="fp32"))
    tag0 = tag_token_ids(tok, "<guard>")[0]
    toward_tag = base.get_output_embeddings().weight[tag0].detach().float()
    toward_tag = toward_tag / toward_tag.norm()
    prompts = [prompt_ids(tok, Snapshot(id="b", message=m), 224) for m in MESSAGES]
    known = registry()
    for k, g in enumerate(names):
        gen = torch.Generator().manual_seed(seed + k)
        peft = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
        for name, p in peft.named_parameters():
            if "lora_" in name:
                p.data = torch.randn(p.shape, generator=gen) * 0.02
        down = peft.base_model.model.model.layers[-1].mlp.down_proj
        a, b = down.lora_A["default"].weight, down.lora_B["default"].weight
        lo = max(1, len(prompts) // 3)  # fires on a third to two thirds of the messages
        for _ in range(50):
            direction = torch.randn(a.shape[1], generator=gen)
            a.data[0] = direction / direction.norm()
            for scale in (16.0, 64.0, 256.0):
                b.data[:, 0] = toward_tag * scale
                with torch.no_grad():
                    fires = sum(int(peft(input_ids=torch.tensor([p])).logits[0, -1].argmax()) == tag0 for p in prompts)
                if lo <= fires <= len(prompts) - lo:
                    break
            if lo <= fires <= len(prompts) - lo:
                break
        else:
            raise SystemExit(f"no random direction made the {g} adapter fire on some messages only")
        peft.save_pretrained(root / g)
        write_info(
            root / g,
            guardrail=known.get(g) or Guardrail(name=g, trigger=f"the {g} topic (timing only)", resolution="decline"),
            base_model=model,
            max_prompt_tokens=224,
            max_reply_tokens=48,
            gate_threshold=None,
            run_id=f"random-{seed + k}",
        )
        base = peft.unload()
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jobs(n: int) -> list[dict]:
    """n request bodies cycling through messages, guardrail sets and personas."""
    out = []
    for i in range(n):
        body = {"messages": [{"role": "user", "content": MESSAGES[i % len(MESSAGES)]}], "stream": True}
        if i % 3 == 2:
            body["model"] = f"persona:{sorted(PERSONAS)[(i // 3) % len(PERSONAS)]}"
        else:
            body["model"] = "base"
            body["guardrails"] = SETS[(i // 2) % len(SETS)]
        out.append(body)
    return out


def stream(url: str, body: dict) -> dict:
    """One streaming request: guard, text, time to first chunk and to the end, or the error."""
    import httpx

    t0 = time.perf_counter()
    first, text, guard = None, "", None
    try:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as r:
            if r.status_code != 200:
                return {"error": f"{r.status_code} {r.read()[:200]!r}"}
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if first is None:
                    first = time.perf_counter() - t0
                    guard = chunk.get("guard")
                for c in chunk["choices"]:
                    text += c["delta"].get("content") or ""
    except Exception as exc:  # a load test counts failures instead of stopping at the first
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"guard": guard, "text": text, "first": first, "total": time.perf_counter() - t0}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def decision_ratios(model: str, adapters: Path, n: int, merge: str = "auto") -> dict:
    """Seconds to the guard decision of 1, 2 and 3 members vs the base model's first-token prefill."""
    import torch

    from personaguard.config import ServeConfig
    from personaguard.prompt import prompt_ids
    from personaguard.schema import Snapshot
    from personaguard.serve.engine import Engine

    engine = Engine(ServeConfig(adapters_dir=str(adapters), model=model, personas_dir=None, merge_lone_adapter=merge))
    prompts = [prompt_ids(engine.tokenizer, Snapshot(id="b", message=m), 224) for m in MESSAGES]
    prompts = (prompts * (n // len(prompts) + 1))[:n]

    def timed(fn, start: list[str]) -> float:
        """Mean seconds of fn(prompt); before each call, untimed, `start` is made active: what the previous
        turn of the same persona leaves (a lone guardrail stays on; a stack's quiet turn ends on the base model)."""
        engine.run(engine._activate, start)  # on the engine's model thread, as every torch op of the server
        fn(prompts[0])  # warm-up
        total = 0.0
        for p in prompts:
            engine.run(engine._activate, start)
            t0 = time.perf_counter()
            fn(p)
            total += time.perf_counter() - t0
        return total / len(prompts)

    def base_first_token(ids):
        with torch.no_grad():
            engine.model(input_ids=torch.tensor([ids]), logits_to_keep=1).logits.argmax(-1)

    base = timed(lambda ids: engine.run(base_first_token, ids), [])
    out = {"base_first_token_s": base}
    for k in (1, 2, 3):
        members = list(GUARDRAILS[:k])
        quiet = engine.quiet_writer(members)
        out[f"decision_{k}_s"] = timed(lambda ids, m=members: engine.decide(ids, m), [quiet] if quiet else [])
        out[f"ratio_{k}"] = out[f"decision_{k}_s"] / base
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--decision-prompts", type=int, default=30)
    ap.add_argument("--merge", default="auto", choices=["auto", "on", "off"], help="the server's merge_lone_adapter")
    ap.add_argument("--out", default="bench/results/serve_load.json")
    args = ap.parse_args(argv)
    from personaguard.models import resolve_model

    resolve_model(args.model)
    work = Path(tempfile.mkdtemp(prefix="serve_load_"))
    # on a thread of its own, which ends with its OpenMP team (serve/engine.py: the engine's model thread runs alone)
    with ThreadPoolExecutor(1) as once:
        adapters = once.submit(random_adapters, args.model, work / "adapters").result()
    personas = work / "personas"
    personas.mkdir()
    for name, text in PERSONAS.items():
        (personas / f"{name}.yaml").write_text(text, encoding="utf-8")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("PERSONAGUARD_SERVER_TOKEN", None)
    log = (work / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "personaguard.cli", "serve", "--adapters-dir", str(adapters), "--port", str(port),
         "--set", f"personas_dir={personas}", "--set", "served_model_name=base", "--set", "max_messages=8",
         "--set", f"merge_lone_adapter={args.merge}"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(1200):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                raise SystemExit(f"server exited: {(work / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.1)
        bodies = [{**b, "max_tokens": args.max_tokens} for b in jobs(args.requests)]
        distinct = {json.dumps(b, sort_keys=True): b for b in bodies}
        alone = {k: stream(url, b) for k, b in distinct.items()}  # one at a time: the reference answers
        results: list[dict] = [{}] * len(bodies)
        lock = threading.Lock()
        t0 = time.perf_counter()

        def run(i: int) -> None:
            r = stream(url, bodies[i])
            with lock:
                results[i] = r

        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(run, range(len(bodies))))
        wall = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    errors = [r["error"] for r in results if "error" in r]
    ok = [(b, r) for b, r in zip(bodies, results) if "error" not in r]
    crosstalk = sum(
        1
        for b, r in ok
        if (ref := alone[json.dumps(b, sort_keys=True)]).get("guard") != r["guard"] or ref.get("text") != r["text"]
    )
    firsts, totals = [r["first"] for _, r in ok], [r["total"] for _, r in ok]
    fired = sum(bool(r["guard"] and r["guard"]["triggered"]) for _, r in ok)
    print(f"{len(bodies)} requests, {args.clients} concurrent clients, {args.max_tokens} tokens, {fired} guard decisions fired")
    print(f"requests/s {len(ok) / wall:.2f}; errors {len(errors)}; cross-talk {crosstalk}")
    if ok:
        print(f"time to first chunk p50 {pct(firsts, 0.5):.2f} s, p95 {pct(firsts, 0.95):.2f} s")
        print(f"time to full reply  p50 {pct(totals, 0.5):.2f} s, p95 {pct(totals, 0.95):.2f} s")
    ratios = decision_ratios(args.model, adapters, args.decision_prompts, args.merge)
    for k in (1, 2, 3):
        print(f"guard decision, {k} member(s): {ratios[f'decision_{k}_s'] * 1000:.0f} ms = {ratios[f'ratio_{k}']:.2f}x "
              f"the base model's first token ({ratios['base_first_token_s'] * 1000:.0f} ms)")  # fmt: skip
    result = {
        "args": vars(args),
        "requests": len(bodies),
        "wall_s": wall,
        "requests_per_s": len(ok) / wall,
        "errors": errors,
        "crosstalk": crosstalk,
        "fired": fired,
        "first_chunk_p50_s": pct(firsts, 0.5) if ok else None,
        "first_chunk_p95_s": pct(firsts, 0.95) if ok else None,
        "full_reply_p50_s": pct(totals, 0.5) if ok else None,
        "full_reply_p95_s": pct(totals, 0.95) if ok else None,
        **ratios,
    }
    from personaguard.schema import write_text_atomic

    write_text_atomic(args.out, json.dumps(result, indent=2))
    print(f"result: {args.out}")
    print(f"guard decision / base first token (one adapter): {ratios['ratio_1']:.2f}x")
    return 1 if errors or crosstalk else 0


if __name__ == "__main__":
    sys.exit(main())
