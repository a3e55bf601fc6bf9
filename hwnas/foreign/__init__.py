"""Models hwnas did not make: reading model files safely, cutting them into blocks, profiling and pricing them."""
