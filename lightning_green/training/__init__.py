"""Torch-level parts of a training run, no Lightning: measured windows, gradient pairs, learning rates.

The callbacks use them at hook time; they use :mod:`lightning_green.energy` and torch, and know
nothing of Lightning.
"""
