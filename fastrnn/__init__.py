"""fastrnn: a fast, exact RNN forward pass (Elman, GRU, LSTM) for NumPy arrays on the CPU."""

from ._api import forward
from ._gated import GRULayer, LSTMLayer, prepare_gru, prepare_lstm
from ._layer import Layer, prepare
from ._rnn import RNN

__all__ = ["RNN", "GRULayer", "LSTMLayer", "Layer", "forward", "prepare", "prepare_gru",
           "prepare_lstm", "__version__"]
__version__ = "0.1.0"
