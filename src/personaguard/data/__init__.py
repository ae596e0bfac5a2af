"""Stage 1, generate: synthetic preference data (offline pools or an OpenAI-compatible teacher)."""
