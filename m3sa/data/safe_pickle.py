"""Load a downloaded pickle without running it: an allowlist unpickler.

``pickle.load`` calls whatever callables the file names, so a pickle is code. The
processed MOSI / MOSEI / SIMS files (MMSA, MAG-BERT) need only numpy arrays, dtypes and
scalars inside lists, dicts, tuples, strings and numbers; :func:`load_pickle` builds those
and refuses any other global before it is called (the "Restricting Globals" pattern of the
:mod:`pickle` documentation). Denylist scanners are not used: an allowlist refuses what it
does not know, a denylist lets it through.

Every failure is one :class:`~m3sa.errors.PickleFileError` line naming the file.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

from m3sa.atomic import os_reason
from m3sa.errors import PickleFileError

# (module, name) -> why it is safe to call. numpy moved its internals from numpy.core to
# numpy._core in 2.0; files written by either name both.
_NUMPY_CORE = ("numpy.core", "numpy._core")
ALLOWED: frozenset[tuple[str, str]] = frozenset(
    [(f"{core}.multiarray", "_reconstruct") for core in _NUMPY_CORE]  # empty ndarray of a given dtype
    + [(f"{core}.multiarray", "scalar") for core in _NUMPY_CORE]  # a numpy scalar from its bytes
    + [(f"{core}.numeric", "_frombuffer") for core in _NUMPY_CORE]  # protocol 5: array over a buffer
    + [("numpy", "ndarray"), ("numpy", "dtype")]
    + [("_codecs", "encode")]  # protocol 2 writes bytes as latin-1 text + encode
    + [("builtins", n) for n in ("list", "dict", "tuple", "set", "frozenset", "bytes", "bytearray", "str",
                                  "int", "float", "complex", "bool")]
    + [("__builtin__", n) for n in ("list", "dict", "tuple", "set", "frozenset", "bytearray", "str", "unicode",
                                     "int", "long", "float", "complex", "bool")]  # Python 2 pickles
    + [("collections", "OrderedDict")]
)

_WHAT = "numpy arrays, lists, dicts, tuples, strings and numbers"
_TORCH_HOW = ("it holds torch tensors, which this loader does not build; convert it once in a trusted "
              "environment: d = torch.load(path, weights_only=True), replace every tensor t by t.numpy(), "
              "then pickle.dump(d, open('converted.pkl', 'wb'))")


class _Refused(Exception):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(module, name)
        self.module, self.name = module, name


class _AllowlistUnpickler(pickle.Unpickler):
    """The C unpickler with :meth:`find_class` restricted to :data:`ALLOWED`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise _Refused(module, name)
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:  # torch.save's storages come this way
        raise _Refused("persistent id", str(pid)[:40])


def load_pickle(path: str | Path) -> Any:
    """The object in the pickle at ``path``, built from :data:`ALLOWED` globals only.

    Raises :class:`PickleFileError` for a missing or unreadable file, a file that is not a
    (complete) pickle, a torch zip archive, and a pickle that names any other global; in the
    last case nothing the file names has been called.
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            raise PickleFileError(f"{path}: a zip archive (torch.save format), not a plain pickle; {_TORCH_HOW}")
        with open(path, "rb") as f:
            # latin1: Python 2 pickles store numpy buffers as str; it only affects those.
            return _AllowlistUnpickler(f, encoding="latin1").load()
    except _Refused as err:
        if err.module == "persistent id" or err.module.split(".")[0] == "torch":
            raise PickleFileError(f"{path}: refused: {_TORCH_HOW}") from None
        raise PickleFileError(f"{path}: refused: the pickle wants to build {err.module}.{err.name}, which is "
                              f"not allowed (only {_WHAT}); nothing from the file was run") from None
    except FileNotFoundError:
        raise PickleFileError(f"{path}: not found; set data.pickle to your .pkl file") from None
    except IsADirectoryError:
        raise PickleFileError(f"{path}: is a folder; set data.pickle to the .pkl file inside it") from None
    except OSError as err:
        raise PickleFileError(f"{path}: cannot be read ({os_reason(err)})") from None
    except EOFError:
        raise PickleFileError(f"{path}: the pickle ends early (truncated download?); fetch the file again") from None
    except MemoryError:
        raise PickleFileError(f"{path}: not enough memory to load the pickle") from None
    except (pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            UnicodeDecodeError, OverflowError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "truncated" in reason:
            raise PickleFileError(f"{path}: the pickle ends early (truncated download?); fetch the file "
                                  "again") from None
        raise PickleFileError(f"{path}: not a readable pickle ({reason})") from None
