"""Layouts: where each named block (W1, b1, ...) lives in the flat parameter vector theta."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["Layout", "MLPLayout"]


class Layout:
    """Names, shapes and offsets of the blocks of a flat float64 vector.

    Blocks are stored one after the other in the given order, each in C (row-major) order,
    exactly as the seed's ``dictionary_to_vector`` flattens them.

    Parameters
    ----------
    shapes : mapping of str to tuple of int
        Block names (in flattening order) and their shapes.

    Examples
    --------
    >>> layout = Layout({"W1": (2, 3), "b1": (2, 1)})
    >>> layout.n_params, layout.offsets.tolist()
    (8, [0, 6, 8])
    >>> layout.locate(7)
    ('b1', (1, 0))
    >>> layout.unpack(np.arange(8.0))["W1"]
    array([[0., 1., 2.],
           [3., 4., 5.]])
    """

    def __init__(self, shapes: Mapping[str, Sequence[int]]):
        self.names: tuple[str, ...] = tuple(shapes)
        self.shapes: tuple[tuple[int, ...], ...] = tuple(
            tuple(int(n) for n in shape) for shape in shapes.values()
        )
        sizes = [int(np.prod(shape, dtype=np.int64)) for shape in self.shapes]
        self.offsets: np.ndarray = np.concatenate(([0], np.cumsum(sizes, dtype=np.int64)))
        self.n_params: int = int(self.offsets[-1])
        #: The gradient keys in the seed's convention: ``'d' + name``.
        self.grad_names: tuple[str, ...] = tuple("d" + name for name in self.names)
        self._index = {name: k for k, name in enumerate(self.names)}

    # -- naming -------------------------------------------------------------------------------
    def block(self, name: str) -> slice:
        """The slice of theta holding block ``name``."""
        k = self._index[name]
        return slice(int(self.offsets[k]), int(self.offsets[k + 1]))

    @property
    def spans(self) -> tuple[slice, ...]:
        """Each block's slice of the flat vector, in order."""
        return tuple(slice(int(lo), int(hi)) for lo, hi in zip(self.offsets[:-1],
                                                                self.offsets[1:]))

    @functools.cached_property
    def bounds(self) -> np.ndarray:
        """Each block's first and last + 1 index, an ``(n_blocks, 2)`` int64 array (shared:
        not to be written to)."""
        return np.stack((self.offsets[:-1], self.offsets[1:]), axis=1).astype(np.int64)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[self._index[name]]

    def locate(self, index: int) -> tuple[str, tuple[int, ...]]:
        """The block name and the index inside the block's shape of flat index ``index``."""
        if not 0 <= index < self.n_params:
            raise IndexError(f"index {index} is outside theta of {self.n_params} parameters")
        k = int(np.searchsorted(self.offsets, index, side="right")) - 1
        inner = np.unravel_index(index - int(self.offsets[k]), self.shapes[k])
        return self.names[k], tuple(int(n) for n in inner)

    # -- conversion ---------------------------------------------------------------------------
    def pack(self, arrays: Mapping[str, np.ndarray], prefix: str = "") -> np.ndarray:
        """Concatenate ``arrays[prefix + name]`` for every block into a new flat float64 vector.

        Shapes are assumed checked (see :mod:`gradcheck_fast.validation`).
        """
        return np.concatenate(
            [np.ravel(arrays[prefix + name]) for name in self.names], dtype=np.float64
        )

    def unpack(self, theta: np.ndarray, prefix: str = "",
               copy: bool = True) -> dict[str, np.ndarray]:
        """Split a flat vector into ``{prefix + name: block}``, shaped like the blocks: copies,
        or (``copy=False``) read-only views of ``theta``."""
        flat = np.ravel(theta)
        blocks = {}
        for k, (name, shape) in enumerate(zip(self.names, self.shapes)):
            block = flat[self.offsets[k] : self.offsets[k + 1]].reshape(shape)
            if copy:
                block = block.copy()
            else:
                block.flags.writeable = False
            blocks[prefix + name] = block
        return blocks

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Layout):
            return NotImplemented
        return self.names == other.names and self.shapes == other.shapes

    def __hash__(self) -> int:
        return hash((self.names, self.shapes))

    def __repr__(self) -> str:
        blocks = ", ".join(f"{n}{s}" for n, s in zip(self.names, self.shapes))
        return f"{type(self).__name__}({blocks}; n_params={self.n_params})"


def is_shape_dict(mapping: Mapping) -> bool:
    """True for ``{'W1': (5, 4), ...}``: every value a tuple or list of ints (a dict of arrays
    is read for its arrays' shapes instead)."""
    def is_shape(value):
        return isinstance(value, (tuple, list)) and all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in value)
    return len(mapping) > 0 and all(is_shape(v) for v in mapping.values())


class MLPLayout(Layout):
    """The layout of a fully connected network ``W1 (n1, n0), b1 (n1, 1), ..., WL, bL``.

    Besides the generic layout it carries what the jitted kernels read: ``sizes`` (the layer
    widths ``n0, ..., nL``), and ``w_off[l]``/``b_off[l]``, the flat offsets of ``Wl``/``bl``
    (entry 0 unused).

    Examples
    --------
    >>> net = MLPLayout([4, 5, 3, 1])   # the seed's network
    >>> net.n_params, net.names
    (47, ('W1', 'b1', 'W2', 'b2', 'W3', 'b3'))
    >>> net.w_off.tolist(), net.b_off.tolist()
    ([0, 0, 25, 43], [0, 20, 40, 46])
    """

    def __init__(self, sizes: Iterable[int]):
        self.sizes: np.ndarray = np.array(list(sizes), dtype=np.int64)
        self.size_tuple: tuple[int, ...] = tuple(int(n) for n in self.sizes)
        shapes = {}
        for l in range(1, len(self.sizes)):
            shapes[f"W{l}"] = (int(self.sizes[l]), int(self.sizes[l - 1]))
            shapes[f"b{l}"] = (int(self.sizes[l]), 1)
        super().__init__(shapes)
        self.w_off: np.ndarray = np.concatenate(([0], self.offsets[0:-1:2]))
        self.b_off: np.ndarray = np.concatenate(([0], self.offsets[1:-1:2]))
        self._activation_offsets: dict[int, np.ndarray] = {}

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def from_sizes(sizes: tuple[int, ...]) -> MLPLayout:
        """The layout for layer widths ``sizes``, cached (layouts are never modified)."""
        return MLPLayout(sizes)

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def activation_offsets(self, m: int) -> np.ndarray:
        """Offsets of layer l's ``(n_l, m)`` activations in one flat array (l = 0 is the input)."""
        offsets = self._activation_offsets.get(m)
        if offsets is None:
            offsets = np.concatenate(([0], np.cumsum(self.sizes * m, dtype=np.int64)))
            offsets.flags.writeable = False
            self._activation_offsets[m] = offsets
        return offsets


#: The seed's 4-5-3-1 network (47 parameters), the default of ``vector_to_dictionary``.
SEED_LAYOUT = MLPLayout([4, 5, 3, 1])
