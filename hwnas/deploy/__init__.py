"""Shipping the answer: export, parity, verification on the device, the CI gate and budgets, report, pipeline."""
