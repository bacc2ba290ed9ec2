"""The re-routing core: strategies, kernels, neighbourhoods. Pure torch, model-agnostic, no I/O."""
from r2t2.routing.config import NEIGHBOURHOODS, RerouteConfig
from r2t2.routing.kernels import KERNELS
from r2t2.routing.protocol import Neighbourhood, ReferenceBatch, RoutedModel, is_valid_routing
from r2t2.routing.request import RerouteRequest
from r2t2.routing.reroute import reroute, reroute_many
from r2t2.routing.result import LineSearchPoint, Neighbour, RerouteResult
from r2t2.routing.simplex import project_to_simplex
from r2t2.routing.strategies import Needs, Strategy, import_strategies, register, strategy, strategy_names

# The built-in strategies: each module registers its own on import, in this order (the baseline, then by cost, as
# docs/method.md lists them and `r2t2 eval` runs them).
from r2t2.routing import none, meanshift, kernel_regression, ngd, answer_space, oracle  # noqa: E402,F401,I001

__all__ = [
    "KERNELS",
    "NEIGHBOURHOODS",
    "LineSearchPoint",
    "Needs",
    "Neighbour",
    "Neighbourhood",
    "ReferenceBatch",
    "RerouteConfig",
    "RerouteRequest",
    "RerouteResult",
    "RoutedModel",
    "Strategy",
    "import_strategies",
    "is_valid_routing",
    "project_to_simplex",
    "register",
    "reroute",
    "reroute_many",
    "strategy",
    "strategy_names",
]
