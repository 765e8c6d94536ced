"""Every loss of diffcomb, one file per family where the loss is a composition of the family's
ops (its own backward is the chain rule through them); losses that are themselves a custom op
(the Fenchel-Young losses, the ranking-metric losses) live beside their op and are re-exported
here. Reductions follow torch.nn.functional: ``reduction="mean" | "sum" | "none"``."""

from ..fenchel_young import fenchel_young_loss
from ..ranking import auc_loss, average_precision_loss, ndcg_loss, recall_at_k_loss
from .isotonic import *  # noqa: F401,F403
from .isotonic import __all__ as _isotonic
from .perturb import *  # noqa: F401,F403
from .perturb import __all__ as _perturb
from .sortnet import *  # noqa: F401,F403
from .sortnet import __all__ as _sortnet

__all__ = sorted([*_isotonic, *_perturb, *_sortnet, "auc_loss", "average_precision_loss", "fenchel_young_loss", "ndcg_loss",
                  "recall_at_k_loss"])
