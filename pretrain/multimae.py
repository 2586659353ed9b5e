"""`python -m pretrain.multimae`: pretrain a MultiMAE on RGB (+ saliency) shards.

The entry point only; the model is pretrain/model.py, the training loop pretrain/train.py.
"""

from pretrain.train import main

if __name__ == "__main__":
    main()
