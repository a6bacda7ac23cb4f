"""Prove the artifacts: parity, per-layer error, golden references, reports."""
