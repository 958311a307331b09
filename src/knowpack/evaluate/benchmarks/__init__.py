"""External benchmarks (MMLU, TruthfulQA) run through lm-evaluation-harness from local files only."""
