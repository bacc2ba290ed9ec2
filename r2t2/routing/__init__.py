"""The re-routing core: strategies, kernels, neighbourhoods. Pure torch, model-agnostic, no I/O."""
from r2t2.routing.config import NEIGHBOURHOODS, STRATEGIES, RerouteConfig
from r2t2.routing.kernels import KERNELS
from r2t2.routing.protocol import Neighbourhood, ReferenceBatch, RoutedModel, is_valid_routing
from r2t2.routing.request import RerouteRequest
from r2t2.routing.reroute import reroute, reroute_many
from r2t2.routing.result import LineSearchPoint, Neighbour, RerouteResult
from r2t2.routing.simplex import project_to_simplex

__all__ = [
    "KERNELS",
    "NEIGHBOURHOODS",
    "STRATEGIES",
    "LineSearchPoint",
    "Neighbour",
    "Neighbourhood",
    "ReferenceBatch",
    "RerouteConfig",
    "RerouteRequest",
    "RerouteResult",
    "RoutedModel",
    "is_valid_routing",
    "project_to_simplex",
    "reroute",
    "reroute_many",
]
