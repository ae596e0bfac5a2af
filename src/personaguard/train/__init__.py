"""Stage 2, train: ORPO on LoRA adapters, one guardrail at a time or jointly."""
