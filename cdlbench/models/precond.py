"""Network parameterisations ("preconditioning") around a raw network F(input, logsnr).

- `eps`: the network is the noise predictor eps_theta(z, a) itself (VP view).
- `edm`: Karras et al. 2022, section 5 and Table 1 (eq. 7):
      D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)
      c_skip = sd^2 / (sigma^2 + sd^2),  c_out = sigma sd / sqrt(sigma^2 + sd^2),
      c_in = 1 / sqrt(sigma^2 + sd^2),   sd = sigma_data.
  EDM feeds c_noise = ln(sigma)/4; we feed a = -2 ln(sigma) (= -8 c_noise, the same affine
  function of ln sigma) so every network sees its noise level as a log-SNR, whatever its
  parameterisation. The module computes the VE denoiser and says so with `output = "x0"`;
  `Denoiser.wrap` then exposes both views.
"""
from __future__ import annotations

import torch
from torch import nn

PRECONDS = ("eps", "edm")


class EDMPrecond(nn.Module):
    """x0-predicting wrapper D(x; sigma) around a raw network F(input, logsnr) (EDM Table 1)."""

    output = "x0"

    def __init__(self, net: nn.Module, sigma_data: float = 1.0):
        super().__init__()
        self.net = net
        self.sigma_data = float(sigma_data)
        self.num_classes = int(getattr(net, "num_classes", 0) or 0)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """x [N, *shape] (VE point), sigma [N] -> D(x; sigma) [N, *shape]."""
        sd = self.sigma_data
        s = sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        norm = torch.sqrt(s * s + sd * sd)
        c_skip, c_out, c_in = sd * sd / (norm * norm), s * sd / norm, 1.0 / norm
        a = -2.0 * torch.log(sigma.to(x.dtype))                  # c_noise as a log-SNR
        labels = {} if class_labels is None else {"class_labels": class_labels}
        return c_skip * x + c_out * self.net(c_in * x, a, **labels)


def data_sigma(sigma_data: float | None, data_var) -> float:
    """sigma_data, or the data's RMS standard deviation sqrt(mean_i lam_i) when None (1.0 if unknown)."""
    if sigma_data is not None:
        return float(sigma_data)
    if data_var is None:
        return 1.0
    return float(torch.as_tensor(data_var, dtype=torch.float64).mean().sqrt())


def precondition(net: nn.Module, precond: str, sigma_data: float | None = None, data_var=None) -> nn.Module:
    """Wrap a raw eps-style network in the chosen parameterisation."""
    if precond == "eps":
        return net
    if precond == "edm":
        return EDMPrecond(net, data_sigma(sigma_data, data_var))
    raise ValueError(f"precond must be one of {PRECONDS}, got {precond!r}")
