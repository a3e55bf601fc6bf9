"""Learning: datasets that stream (formats, splits, augmentation), the training loop on any torch device, and
data-parallel training with torch.distributed. Below the search, which trains through it; knows nothing of
devices, tables or costs."""
