"""The Talk2Face prefix-LM: model, sequences, DDP training, generation, evaluation."""
