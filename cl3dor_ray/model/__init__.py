"""The 3D LMM: point encoder, object tokens, and a transformers causal LM around them."""
