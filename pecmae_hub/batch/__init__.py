"""Batch classification output files: the results file (CSV / JSONL, repaired, resumable, one model per
file; ``results``) and the lock that keeps two runs off one file (``lock``)."""
