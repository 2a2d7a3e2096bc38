"""Evaluation: benchmark metrics (ScanQA, Scan2Cap, POPE) and the evaluation job."""
