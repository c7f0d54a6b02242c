"""Fused primitives: public entry points, backend dispatch and torch.library registration."""
