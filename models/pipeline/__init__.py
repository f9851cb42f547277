"""nestdnn offline stage: train, rank (TRR), prune, freeze-&-grow and export nested
multi-capacity models in the format of docs/model-format.md.

Entry point: `models/regenerate` (or `python -m pipeline` with models/ on sys.path).
Held-out data for other tools: `pipeline.data.heldout(dataset)`.
"""
