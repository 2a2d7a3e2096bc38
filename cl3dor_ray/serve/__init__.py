"""Ray Serve: the HTTP app (FastAPI ingress + batched model deployment) and its Python client."""
