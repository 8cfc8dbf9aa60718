"""Memory/layout planning: what a layout costs per GPU (weights, gradients, optimizer state,
activations), its communication, pipeline bubble, step time and MFU, checked against measured
runs; ``tower-megatron plan``. Formulas and sources: ``docs/planning.md``."""
