"""
The NMDA-receptor-like activation (Kim et al., NeurIPS 2023) and the registry of activations
that the feed-forward layer of model.py can use.

The NMDA receptor passes a current I = g * B(V) * (V - E) with E ~ 0 mV and the Mg2+ block
B(V) = 1 / (1 + [Mg2+]/3.57mM * exp(-0.062 V))  (Jahr & Stevens, 1990). Replacing V by the
pre-activation x gives

    NMDA_{alpha,beta}(x) = x / (1 + alpha * exp(-beta * x)) = x * sigmoid(beta * x - ln alpha)

alpha plays [Mg2+] (alpha = 0: no block, the identity), beta the steepness.
alpha = 1, beta = 1 is exactly SiLU/Swish; alpha = 1, beta = 1.702 is close to GELU.
"""

import inspect
import math

import torch
import torch.nn as nn


def nmda(x, alpha=1.0, beta=1.0):
    """x / (1 + alpha * exp(-beta * x)), written as x * sigmoid(beta * x - ln alpha).

    The sigmoid form never evaluates exp of a large argument, so it is finite for any finite x
    (|x| = 1e4 and beyond) and any alpha in (0, 1e6], in float32 and in bf16."""
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if alpha == 0:
        return x  # no Mg2+ block: a linear unit
    gate = x if beta == 1 else beta * x  # beta = 1 (the paper's): one element-wise kernel fewer
    return x * torch.sigmoid(gate - math.log(alpha))


class NMDA(nn.Module):
    def __init__(self, alpha=1.0, beta=1.0):
        super().__init__()
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha, self.beta = float(alpha), float(beta)

    def forward(self, x):
        return nmda(x, self.alpha, self.beta)

    def extra_repr(self):
        return f"alpha={self.alpha}, beta={self.beta}"


# The activations the feed-forward layer can use (--act): each name with a function that builds its
# module. The function's parameters say what the module is built from, among the settings `alpha`
# and `beta` (ModelConfig's) and `width`, the layer's number of neurons (d_ff), for a module with a
# parameter per neuron. An activation's label in compare.py's tables and figures shows the settings
# it takes, and only those.
ACTIVATIONS = {
    "nmda": lambda alpha, beta: NMDA(alpha, beta),
    "gelu": lambda: nn.GELU(),
    "relu": lambda: nn.ReLU(),
    "swish": lambda: nn.SiLU(),
    "silu": lambda: nn.SiLU(),
    "linear": lambda: nn.Identity(),
    "sigmoid": lambda: nn.Sigmoid(),
    "tanh": lambda: nn.Tanh(),
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "elu": lambda: nn.ELU(),
}


def settings_of(name):
    """The settings activation `name` is built from, in its function's order, e.g. ('alpha', 'beta')."""
    return tuple(p for p in inspect.signature(ACTIVATIONS[name]).parameters if p != "width")


def make_activation(name, width, alpha=1.0, beta=1.0):
    """The module of activation `name` for a layer of `width` neurons, built from what its entry in
    ACTIVATIONS asks for."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}")
    build, given = ACTIVATIONS[name], dict(width=width, alpha=alpha, beta=beta)
    return build(**{p: given[p] for p in inspect.signature(build).parameters})
