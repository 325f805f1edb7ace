"""Evaluation: MMBench (circular, exact matching) through VLMEvalKit or the built-in scorer.

Entry points: `service.run_eval` (a checkpoint on a suite), `service.score_predictions` (a predictions
file), `mmbench_tsv.write_mmbench_tsv` / `read_mmbench_tsv` (benchmark files); `command` holds the
`llava-kit eval` verb.
"""
