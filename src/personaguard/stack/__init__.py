"""Stage 4, stack: several guardrails at once (dynamic stacks, routing, merges) and their evaluation."""
