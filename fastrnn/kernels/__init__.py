"""The compiled kernels (Numba), in layers; importing any of them imports Numba.

- ``jit``: how they are compiled (settings, the on-disk cache keyed to this
  folder's whole source, :class:`.jit.FewVariants`);
- ``simd``: vectors as wide as the target CPU's registers;
- ``activations``: vectorisable tanh and relu;
- ``product``: the register-blocked dense product on packed panels;
- ``sparse``: the SELL-C-sigma product of a sparse w_hh;
- ``barrier``: the step barrier between threads;
- ``cells``: the update after the products (Elman), a compile-time choice,
  and the packing of a layer's weights and rows;
- ``driver``: the one step loop that every forward plan runs;
- ``small``: one small sequence, one joint product a step;
- ``step``: one time step of a prepared layer (``Layer.step``).

Each imports only the layers above it; the Python side (``fastrnn._numba``,
``fastrnn._units``, ``fastrnn._layer``) imports them, never the reverse.
"""
