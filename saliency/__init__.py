"""Stage 3: PiCANet saliency predictor, its student, metrics and pseudo-labelling."""
