"""Diffusion math: schedules, log-SNR/sigma maps and the ITD likelihood estimator."""
from .itd import LogisticProposal, default_proposal, effective_logsnr, log_likelihood
from .schedules import (alphas_bar, ddpm_betas, ddpm_logsnr, karras_sigmas, logsnr_from_alpha_bar,
                        logsnr_from_sigma, sigma_from_logsnr, strided_timesteps, vp_coefficients)

__all__ = ["LogisticProposal", "default_proposal", "effective_logsnr", "log_likelihood", "alphas_bar",
           "ddpm_betas", "ddpm_logsnr", "karras_sigmas", "logsnr_from_alpha_bar", "logsnr_from_sigma",
           "sigma_from_logsnr", "strided_timesteps", "vp_coefficients"]
