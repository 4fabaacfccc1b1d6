"""Fine-tuning a pretrained MLIP into a HIP (datasets, labels, losses, training loop).

Installed as ``hip_head.finetune``; its heavier dependencies come with ``hip-head[finetune]``.
"""
