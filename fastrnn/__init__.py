"""fastrnn: a fast, exact Elman RNN forward pass for NumPy arrays on the CPU."""

from ._api import forward
from ._layer import Layer, prepare
from ._rnn import RNN

__all__ = ["RNN", "Layer", "forward", "prepare", "__version__"]
__version__ = "0.1.0"
