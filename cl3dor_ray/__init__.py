"""CL3DOR on Ray: denser objects, hard negatives and odds-ratio fine-tuning for 3D LMMs."""

__version__ = "0.1.0"
