"""Loading a state dict into a module with an error that says what did not fit.

``nn.Module.load_state_dict`` lists every key of a wrong architecture (hundreds of lines for a
ResNet-50 loaded into a ResNet-18); callers here want one readable line naming both sides.
"""
from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

_EXAMPLES = 3  # keys quoted per kind of problem


class WeightsMismatchError(ValueError):
    """A state dict does not fit the module it was loaded into."""


def load_exact(module: nn.Module, state_dict: Mapping[str, Tensor], what: str, into: str) -> None:
    """Load every tensor of ``state_dict`` into ``module``, and nothing less.

    ``what`` names the weights and ``into`` the receiving architecture in the error message.
    Nothing is loaded unless everything fits. BatchNorm's ``num_batches_tracked`` may be
    absent, as in torchvision's older ImageNet files: it only counts training steps.
    """
    own = module.state_dict()
    shapes = [f"{key}: {tuple(value.shape)} given, {tuple(own[key].shape)} expected"
              for key, value in state_dict.items() if key in own and value.shape != own[key].shape]
    missing = [key for key in own if key not in state_dict and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in state_dict if key not in own]
    problems = [f"{len(keys)} {kind} (e.g. {', '.join(keys[:_EXAMPLES])})"
                for kind, keys in (("shape mismatches", shapes), ("missing keys", missing),
                                   ("unexpected keys", unexpected)) if keys]
    if problems:
        raise WeightsMismatchError(f"{what} does not fit {into}: {'; '.join(problems)}")
    module.load_state_dict(state_dict, strict=False)  # checked above; strict would reject the BN gap
