"""RQ-VAE: an MLP autoencoder whose latent is residual-quantised, one codebook per level.

The codes of a song are the residual quantisation of its encoder latent. Training uses the
straight-through estimator (decoder gradients flow to the encoder past the quantiser), the
codebook loss |sg[r] - e|² plus a commitment loss beta·|r - sg[e]|² per level, codebooks
initialised by residual k-means on the encoded training set (our `kmeans` module), and
re-seeding of codes unused for `dead_code_steps` steps from the current batch's residuals.
The checkpoint kept is the one with the best validation reconstruction loss.
"""

import copy
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .device import resolve_device
from .io import PipelineError, atomic_write, require_file
from .kmeans import code_usage, make_kmeans, residual_kmeans, threads_for

log = logging.getLogger(__name__)



def _mlp(dims: list[int]) -> nn.Sequential:
    layers = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def parse_hidden_dims(text: str) -> list[int]:
    try:
        dims = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        dims = [0]
    if any(d <= 0 for d in dims):
        raise PipelineError(f"rqvae.hidden_dims={text!r}: expected comma-separated positive widths such as '256,128'")
    return dims


class RQVAE(nn.Module):
    def __init__(self, in_dim: int, latent_dim: int, hidden_dims: list[int], codebook_sizes: list[int],
                 beta: float = 0.25):
        super().__init__()
        self.args = {"in_dim": in_dim, "latent_dim": latent_dim, "hidden_dims": list(hidden_dims),
                     "codebook_sizes": list(codebook_sizes), "beta": beta}
        self.beta = beta
        self.encoder = _mlp([in_dim, *hidden_dims, latent_dim])
        self.decoder = _mlp([latent_dim, *reversed(hidden_dims), in_dim])
        self.codebooks = nn.ParameterList(nn.Parameter(torch.randn(k, latent_dim) * 0.1) for k in codebook_sizes)

    def quantize(self, z: torch.Tensor):
        """Residual quantisation of z: (quantised sum, codes (n, levels), codebook+commitment loss, residuals)."""
        residual, quantized = z, torch.zeros_like(z)
        codes, residuals, loss = [], [], z.new_zeros(())
        for book in self.codebooks:
            idx = torch.cdist(residual.detach(), book.detach()).argmin(1)
            e = book[idx]
            loss = loss + torch.mean((e - residual.detach()) ** 2)  # moves the codebook
            loss = loss + self.beta * torch.mean((residual - e.detach()) ** 2)  # commits the encoder
            residuals.append(residual.detach())
            codes.append(idx)
            quantized = quantized + e
            residual = residual - e.detach()
        return quantized, torch.stack(codes, 1), loss, residuals

    def forward(self, x: torch.Tensor):
        z = self.encoder(x)
        quantized, codes, qloss, residuals = self.quantize(z)
        z_st = z + (quantized - z).detach()  # straight-through: decoder gradient reaches the encoder
        return self.decoder(z_st), codes, qloss, residuals

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        latent = sum(book[codes[:, level]] for level, book in enumerate(self.codebooks))
        return self.decoder(latent)


@dataclass
class RQVAEResult:
    model: RQVAE
    codes: np.ndarray  # (n, levels) for every input row
    history: list[dict] = field(default_factory=list)  # per epoch: train_loss, val_recon, reseeded
    best_epoch: int = 0
    best_val_recon: float = float("inf")
    usage: list[dict] = field(default_factory=list)
    reseeded: int = 0
    seconds: float = 0.0
    device: str = "cpu"
    n_train: int = 0
    n_val: int = 0


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split; at least one validation row when val_fraction > 0 and n > 1."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    n_val = min(max(n_val, 1 if val_fraction > 0 and n > 1 else 0), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


@torch.no_grad()
def encode_codes(model: RQVAE, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    model.eval()
    return torch.cat([model.quantize(model.encoder(x[s:s + batch_size]))[1] for s in range(0, len(x), batch_size)])


@torch.no_grad()
def recon_loss(model: RQVAE, x: torch.Tensor, batch_size: int = 4096) -> float:
    """Mean squared error of the decoded codes (what the IDs can reproduce), per coordinate."""
    model.eval()
    total = 0.0
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size]
        total += float(((model(xb)[0] - xb) ** 2).sum())
    return total / max(1, x.numel())


@torch.no_grad()
def init_codebooks(model: RQVAE, x: torch.Tensor, seed: int, backend: str = "auto") -> None:
    """Residual k-means on the encoded training set, on the model's device."""
    model.eval()
    z = torch.cat([model.encoder(x[s:s + 4096]) for s in range(0, len(x), 4096)]).cpu().numpy()
    km = make_kmeans(backend, seed=seed, device=str(x.device))
    sizes = [min(len(b), len(z)) for b in model.codebooks]
    rq = residual_kmeans(z, sizes, km, n_iter=20)
    for book, centroids in zip(model.codebooks, rq.codebooks):
        book.data[: len(centroids)] = torch.as_tensor(centroids, device=book.device)


class DeadCodes:
    """Codes unused for `patience` steps get a random residual from the current batch."""

    def __init__(self, codebook_sizes, patience: int, device, seed: int):
        self.last_used = [torch.zeros(k, dtype=torch.long, device=device) for k in codebook_sizes]
        self.patience = patience
        self.gen = torch.Generator(device="cpu").manual_seed(seed)

    @torch.no_grad()
    def update(self, model: RQVAE, step: int, codes: torch.Tensor, residuals) -> int:
        n = 0
        if self.patience <= 0:
            return n
        for level, (book, last) in enumerate(zip(model.codebooks, self.last_used)):
            last[codes[:, level]] = step
            dead = torch.nonzero(step - last >= self.patience).ravel()
            if len(dead):
                pick = torch.randint(len(residuals[level]), (len(dead),), generator=self.gen)
                book.data[dead] = residuals[level][pick.to(book.device)]
                last[dead] = step
                n += len(dead)
        return n


def _train_epoch(model, opt, x, batch_size, gen, dead, step) -> tuple[float, int, int]:
    model.train()
    perm = torch.randperm(len(x), generator=gen).to(x.device)
    total, reseeded = 0.0, 0
    for s in range(0, len(x), batch_size):
        xb = x[perm[s:s + batch_size]]
        xhat, codes, qloss, residuals = model(xb)
        loss = torch.mean((xhat - xb) ** 2) + qloss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        reseeded += dead.update(model, step, codes, residuals)
        total += float(loss.detach()) * len(xb)
    return total / len(x), reseeded, step


def train_rqvae(X: np.ndarray, cfg_rq, sizes: list[int], seed: int) -> RQVAEResult:
    """Train on a seeded split of X (already normalised if wanted) and encode every row."""
    device = torch.device(resolve_device(cfg_rq.device))
    if device.type != "cpu":
        return _train(X, cfg_rq, sizes, seed, device)
    hidden = parse_hidden_dims(cfg_rq.hidden_dims)
    step_work = cfg_rq.batch_size * 2 * sum(a * b for a, b in zip([X.shape[1], *hidden], [*hidden, cfg_rq.latent_dim]))
    with threads_for(step_work):
        return _train(X, cfg_rq, sizes, seed, device)


def _train(X: np.ndarray, cfg_rq, sizes: list[int], seed: int, device: torch.device) -> RQVAEResult:
    torch.manual_seed(seed)
    model = RQVAE(X.shape[1], cfg_rq.latent_dim, parse_hidden_dims(cfg_rq.hidden_dims), sizes, cfg_rq.beta).to(device)
    train_idx, val_idx = split_indices(len(X), cfg_rq.val_fraction, seed)
    x_all = torch.as_tensor(X, dtype=torch.float32, device=device)
    x_train, x_val = x_all[train_idx], x_all[val_idx]
    t0 = time.perf_counter()
    init_codebooks(model, x_train, seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg_rq.lr)
    gen = torch.Generator().manual_seed(seed)
    dead = DeadCodes(sizes, cfg_rq.dead_code_steps, device, seed)
    result = RQVAEResult(model=model, codes=np.empty((0, len(sizes)), np.int64), device=str(device),
                         n_train=len(train_idx), n_val=len(val_idx))
    best_state, step = None, 0
    for epoch in tqdm(range(1, cfg_rq.epochs + 1), desc="rqvae", unit="epoch"):
        train_loss, reseeded, step = _train_epoch(model, opt, x_train, cfg_rq.batch_size, gen, dead, step)
        val = recon_loss(model, x_val if len(x_val) else x_train)
        result.history.append({"epoch": epoch, "train_loss": train_loss, "val_recon": val, "reseeded": reseeded})
        result.reseeded += reseeded
        if val < result.best_val_recon:
            result.best_val_recon, result.best_epoch = val, epoch
            best_state = copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - t0
    result.codes = encode_codes(model, x_all).cpu().numpy()
    result.usage = code_usage(result.codes, sizes)
    log.info("rqvae: best val reconstruction %.5f at epoch %d of %d, %s codes re-seeded, %.1fs; codes used per "
             "level %s, perplexity %s", result.best_val_recon, result.best_epoch, cfg_rq.epochs,
             f"{result.reseeded:,}", result.seconds, [f"{u['usage']:.0%}" for u in result.usage],
             [round(u["perplexity"], 1) for u in result.usage])
    return result


def save_checkpoint(path, model: RQVAE, **extra) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_write(path, "wb") as f:
        torch.save({"model_args": model.args, "state_dict": state, **extra}, f)


def load_checkpoint(path, made_by: str) -> tuple[RQVAE, dict]:
    """The model (CPU, eval mode) and the checkpoint's other entries."""
    try:
        ckpt = torch.load(require_file(path, made_by), map_location="cpu", weights_only=True)
        model = RQVAE(**ckpt["model_args"])
        model.load_state_dict(ckpt["state_dict"])
    except PipelineError:
        raise
    except Exception as e:  # torch's readers raise many kinds on a damaged file
        raise PipelineError(f"{path} is damaged ({type(e).__name__}); {made_by}") from None
    model.eval()
    return model, {k: v for k, v in ckpt.items() if k not in ("model_args", "state_dict")}
