"""The data stage: scans + annotations -> training-ready Parquet, on Ray Data."""
