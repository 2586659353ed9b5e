"""Stage 4: MultiMAE pretraining on RGB + saliency and the frozen encoder for RL."""
