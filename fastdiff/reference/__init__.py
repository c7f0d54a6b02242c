"""Pure-PyTorch oracles of the fused primitives: any device, float64 capable, noise passed explicitly."""
