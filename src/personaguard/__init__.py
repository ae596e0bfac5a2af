"""personaguard: behavioural guardrails for persona chat LLMs as LoRA adapters.

The flow (see DESIGN.md): generate synthetic preference data -> train one ORPO LoRA adapter per
guardrail -> evaluate -> report. Heavy libraries (torch, transformers) are imported lazily by the
stage modules so that `personaguard --help` stays fast.
"""

__version__ = "0.1.0"
