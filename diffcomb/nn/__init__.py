"""nn.Module wrappers over the functional API, one file per family: each checks its
hyper-parameters in ``__init__``, shows them in ``extra_repr``, and its ``forward`` is one call.
Every module is importable from ``diffcomb.nn`` (and from ``diffcomb``)."""

from .isotonic import *  # noqa: F401,F403
from .isotonic import __all__ as _isotonic
from .perturb import *  # noqa: F401,F403
from .perturb import __all__ as _perturb
from .ranking import *  # noqa: F401,F403
from .ranking import __all__ as _ranking
from .sinkhorn import *  # noqa: F401,F403
from .sinkhorn import __all__ as _sinkhorn
from .softdtw import *  # noqa: F401,F403
from .softdtw import __all__ as _softdtw
from .sortnet import *  # noqa: F401,F403
from .sortnet import __all__ as _sortnet
from .topk import *  # noqa: F401,F403
from .topk import __all__ as _topk

__all__ = sorted([*_isotonic, *_perturb, *_ranking, *_sinkhorn, *_softdtw, *_sortnet, *_topk])
