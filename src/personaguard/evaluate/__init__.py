"""Stage 3, evaluate: replies and guard scores per setting, judges, baselines, checkpoint curves."""
