"""Probabilistic geolocation by flow matching on the sphere ("Around the World in 80 Timesteps", Dufour et al.,
arXiv 2412.06781; public code PLONK): the adaLN-MLP denoiser, three objectives (Riemannian flow matching on S²,
flow matching and DDPM in R³), samplers, exact likelihoods, density maps and the pipeline."""

from geo_models.flow.estimates import DensityGrid, density_mode
from geo_models.flow.likelihood import CONVENTIONS, LikelihoodOutput, exact_log_prob
from geo_models.flow.modeling import GeoAdaLNMLP
from geo_models.flow.objectives import OBJECTIVES, FlowObjective, flow_loss, get_objective
from geo_models.flow.pipeline import POINT_ESTIMATES, SphereFlowPipeline
from geo_models.flow.sampling import SAMPLERS, sample_xyz
from geo_models.flow.schedules import SigmoidSchedule

__all__ = [
    "CONVENTIONS",
    "OBJECTIVES",
    "POINT_ESTIMATES",
    "SAMPLERS",
    "DensityGrid",
    "FlowObjective",
    "GeoAdaLNMLP",
    "LikelihoodOutput",
    "SigmoidSchedule",
    "SphereFlowPipeline",
    "density_mode",
    "exact_log_prob",
    "flow_loss",
    "get_objective",
    "sample_xyz",
]
