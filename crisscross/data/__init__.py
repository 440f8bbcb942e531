"""Two-view sampling, augmentation backends and the training loader."""
