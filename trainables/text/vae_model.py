"""LSTM text VAE and its training loop (plain PyTorch; the Ray Tune adapter is ``trainables.text.vae_tune``).

Model (:class:`TextVAE`): embedding → LSTM encoder → last hidden state h [B, H] → posterior
(``trainables.text.posteriors``) → z [B, D]. The decoder LSTM starts from ``(h0, c0) = split(W z)`` (h0 through
tanh) and reads, at every step, the embedding of the previous token concatenated with z (teacher forcing).
Word dropout replaces decoder input words (not ``<bos>``) by ``<unk>`` with probability ``word_dropout``
during training. Losses are in nats per sentence: ``rec`` = −log p(x|z) summed over the words and ``<eos>``.

Training (:func:`train_vae`): minimise ``mean_batch(rec + β_t · kl)`` with Adam; β_t from a registered
schedule (``trainables.text.beta_schedules``), t counting decoder updates over the whole run. For the semi-implicit
posterior the number of shared mixing draws is ``K_t = k_min + round((k_max − k_min) · level_t)`` with the
schedule's level ``level_t = β_t / β_max`` ∈ [0, 1], i.e. K is annealed in sync with the β cycles and reaches
``k_max`` where β reaches β_max (``ae``: K = k_min throughout); each of the ``j_samples`` z-samples draws its
own ψ_j on top (``trainables.text.posteriors.kl_bound``). Optional cyclical learning rate (cosine per cycle,
restarting with β).

Semi-amortised posterior (``sa``, SA-VAE): :meth:`TextVAE.components` refines each sentence's (μ, log σ²) from
the encoder's by SVI steps on that sentence's training objective rec + β_t · KL (``trainables.text.semi_amortized``),
kept in the graph while the model trains: the loss at the refined parameters updates the decoder and, through the
steps, the encoder. In evaluation (validation, trace, test) the same steps run on the ELBO (β = 1), detached,
before anything is measured.

Aggressive training (He et al. 2019): while on, each outer step first updates only the encoder + posterior
on freshly drawn batches (at most ``aggressive_max_steps`` inner steps; stopped early when the mean loss of
the last ``aggressive_window`` inner steps is no lower than that of the window before), then updates only
the decoder on the outer batch. It is switched off for good after the first epoch whose validation mutual
information I(x, z) does not exceed the best so far.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from trainables.errors import DivergedError
from trainables.text.beta_schedules import cyclical_lr
from trainables.text.data import Batch, TextData, TextSplit, shard_batches
from trainables.text.posteriors import kl_bound, make_posterior
from trainables.text.vae_metrics import evaluate_vae
from trainables.text.vae_training import (
    AnnealedTrainConfig,
    AnnealedTraining,
    TrainingResult,
    aggressive_encoder_steps,
    all_reduce_sum,
)


@dataclass
class VAEModelConfig:
    """Sizes of :class:`TextVAE` and its posterior. ``posterior_options`` maps posterior names to keyword
    arguments of their class, e.g. ``{"semi-implicit": {"noise_dim": 16}}``; only the chosen one's are used."""

    emb_dim: int = 64
    hidden_dim: int = 128
    latent_dim: int = 16
    posterior: str = "gaussian"
    posterior_options: dict = field(default_factory=dict)
    word_dropout: float = 0.0


class TextVAE(nn.Module):
    """LSTM encoder/decoder VAE over a vocabulary of ``vocab_size`` ids (``pad_id`` ignored, ``unk_id`` used
    by word dropout)."""

    def __init__(self, vocab_size: int, cfg: VAEModelConfig, pad_id: int = 0, unk_id: int = 3) -> None:
        super().__init__()
        self.cfg, self.pad_id, self.unk_id = cfg, pad_id, unk_id
        h, d = cfg.hidden_dim, cfg.latent_dim
        self.enc_emb = nn.Embedding(vocab_size, cfg.emb_dim, padding_idx=pad_id)
        self.encoder = nn.LSTM(cfg.emb_dim, h, batch_first=True)
        self.posterior = make_posterior(cfg.posterior, h, d, **cfg.posterior_options.get(cfg.posterior, {}))
        self.dec_emb = nn.Embedding(vocab_size, cfg.emb_dim, padding_idx=pad_id)
        self.z_to_state = nn.Linear(d, 2 * h)
        self.decoder = nn.LSTM(cfg.emb_dim + d, h, batch_first=True)
        self.out = nn.Linear(h, vocab_size)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [*self.enc_emb.parameters(), *self.encoder.parameters(), *self.posterior.parameters()]

    def decoder_parameters(self) -> list[nn.Parameter]:
        return [*self.dec_emb.parameters(), *self.z_to_state.parameters(), *self.decoder.parameters(),
                *self.out.parameters()]

    def encode(self, src: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """h [B, H]: the encoder's last hidden state at each sentence's true length."""
        packed = pack_padded_sequence(self.enc_emb(src), lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.encoder(packed)
        return h_n[-1]

    def components(self, batch: Batch, n: int = 1, beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mixture components of the batch: (mu [B, C, D], logvar [B, C, D]), refined on the batch by a
        refining posterior (``sa``: SVI on each sentence's rec + β·KL, the objective this model trains on, with
        one z-sample per step as Kim et al.; β = 1, the ELBO, in evaluation), differentiably while the model
        trains."""
        mu, logvar = self.posterior.components(self.encode(batch.src, batch.lengths), n)

        def neg_elbo(m: torch.Tensor, lv: torch.Tensor) -> torch.Tensor:
            kl, z = kl_bound(m, lv)
            return (self.reconstruction(z, batch)[0] + beta * kl).sum()

        return self.posterior.refine(mu, logvar, neg_elbo, create_graph=self.training)

    def logits(self, z: torch.Tensor, dec_in: torch.Tensor) -> torch.Tensor:
        """Decoder logits [S, B, T, V] for latents z [S, B, D] and decoder inputs [B, T] (teacher forcing)."""
        s, b, d = z.shape
        t = dec_in.shape[1]
        tokens = dec_in
        if self.training and self.cfg.word_dropout > 0:
            drop = (torch.rand(tokens.shape, device=tokens.device) < self.cfg.word_dropout)
            drop[:, 0] = False
            tokens = tokens.masked_fill(drop & (tokens != self.pad_id), self.unk_id)
        flat_z = z.reshape(s * b, d)
        emb = self.dec_emb(tokens).repeat(s, 1, 1)
        inp = torch.cat([emb, flat_z.unsqueeze(1).expand(-1, t, -1)], dim=-1)
        h0, c0 = self.z_to_state(flat_z).chunk(2, dim=-1)
        out, _ = self.decoder(inp, (torch.tanh(h0).unsqueeze(0).contiguous(), c0.unsqueeze(0).contiguous()))
        return self.out(out).reshape(s, b, t, -1)

    def reconstruction(self, z: torch.Tensor, batch: Batch) -> torch.Tensor:
        """−log p(x|z) [S, B] in nats, summed over the predicted tokens (words + ``<eos>``)."""
        logits = self.logits(z, batch.dec_in)
        s = z.shape[0]
        nll = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.target.repeat(s, 1).reshape(-1),
                                          reduction="none").reshape(s, *batch.target.shape)
        return (nll * batch.mask).sum(-1)

    def forward(self, batch: Batch, beta: float, k: int = 0, j_samples: int = 1) -> dict[str, torch.Tensor]:
        """:meth:`loss` (the call a ``DistributedDataParallel`` wrapper intercepts)."""
        return self.loss(batch, beta, k, j_samples)

    def loss(self, batch: Batch, beta: float, k: int = 0, j_samples: int = 1) -> dict[str, torch.Tensor]:
        """``{"loss": mean(rec + β kl), "rec": [B], "kl": [B]}``; ``j_samples`` = J z-samples per sentence (rec
        averaged over them), each from its own mixing draw ψ_j, and ``k`` = K shared mixing draws of the
        repulsive term (SI only: J + K components are drawn; a Gaussian has one)."""
        mu, logvar = self.components(batch, k + j_samples, beta)
        kl, z = kl_bound(mu, logvar, j_samples)
        rec = self.reconstruction(z, batch).mean(0)
        return {"loss": (rec + beta * kl).mean(), "rec": rec, "kl": kl}


@dataclass
class VAETrainConfig(AnnealedTrainConfig):
    """Optimisation settings of :func:`train_vae`: those of :class:`trainables.text.vae_training.AnnealedTrainConfig`
    (lr in Adam units; ``schedule``: a schedule entry, a name of ``trainables.text.beta_schedules.SCHEDULES``,
    optionally ``name@β_max``; ``ratio`` = R of each cyclical cycle, ``cycles`` = M, ``monotonic_ratio`` = R of
    the monotonic warm-up, ``beta_max`` = the largest β), the cyclical learning rate, and the test's
    importance samples and latent samples."""

    cyclical_lr: bool = False
    lr_min: float = 0.0
    iw_samples: int = 20
    latent_samples: int = 0
    # Trace: every `trace_every` outer iterations (0: no trace) KL, MI and AU on the first `trace_rows`
    # validation sentences, for KL/MI-against-iteration curves finer than one point per epoch.
    trace_every: int = 0
    trace_rows: int = 256


#: Keys of a trace point (:func:`train_vae`), in order.
TRACE_KEYS = ("iteration", "beta", "k", "train_rec", "train_kl", "val_rec", "val_kl", "val_mi", "val_au")


@dataclass
class TrainResult(TrainingResult):
    """A :class:`trainables.text.vae_training.TrainingResult` (history, test metrics, the :class:`TextVAE`) with the
    training's tokens per second and seconds, and its trace (:data:`TRACE_KEYS` -> one value per trace point;
    empty without ``trace_every``)."""

    tokens_per_second: float
    train_seconds: float
    trace: dict[str, list[float]] = field(default_factory=dict)


class Tracer:
    """The trace of one training: every ``every`` iterations a point with β_t, K_t, the training rec and KL
    averaged over the iterations since the previous point (this process's rows; nats per sentence) and
    ``val_{rec,kl,mi,au}`` of the model on ``split`` (``trainables.text.vae_metrics.evaluate_vae``, no importance
    samples; the evaluation seconds are not training seconds)."""

    def __init__(self, every: int, split: TextSplit, vocab, eval_kw: dict[str, Any], seed: int) -> None:
        self.every, self.split, self.vocab, self.eval_kw, self.seed = every, split, vocab, eval_kw, seed
        self.points: dict[str, list[float]] = {k: [] for k in TRACE_KEYS}
        self._rec = self._kl = 0.0
        self._rows = 0

    def add(self, rec: float, kl: float, rows: int) -> None:
        """The current batch's rec and KL summed over its ``rows`` sentences (this process's rows; nats)."""
        self._rec += rec
        self._kl += kl
        self._rows += rows

    def due(self, t: int) -> bool:
        return self.every > 0 and t % self.every == 0

    def point(self, model: nn.Module, t: int, beta: float, k: int) -> None:
        """Record the point of iteration ``t``."""
        val = evaluate_vae(model, self.split, self.vocab, iw_samples=0, seed=self.seed + t, **self.eval_kw)
        rows = max(self._rows, 1)
        values = {"iteration": t, "beta": beta, "k": k, "train_rec": self._rec / rows, "train_kl": self._kl / rows,
                  **{f"val_{m}": float(val[m]) for m in ("rec", "kl", "mi", "au")}}
        for key in TRACE_KEYS:
            self.points[key].append(float(values[key]))
        self._rec = self._kl = 0.0
        self._rows = 0


def _broadcast(obj: Any, rank: int, world: int) -> Any:
    """``obj`` of rank 0 on every rank (identity when ``world == 1``)."""
    if world == 1:
        return obj
    import torch.distributed as dist

    box = [obj if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def train_vae(data: TextData, model_cfg: VAEModelConfig, cfg: VAETrainConfig, device: str | torch.device = "cpu",
              on_epoch: Callable[[dict[str, Any]], None] | None = None,
              distributed: tuple[int, int, Callable[[nn.Module], nn.Module]] | None = None) -> TrainResult:
    """Train a :class:`TextVAE` on ``data.train``; validate every epoch on ``data.val``; test at the end.

    ``on_epoch(metrics)`` is called after each epoch with ``epoch``, ``beta`` (last of the epoch), ``k``,
    ``aggressive`` (on during this epoch), ``inner_steps``, ``train_{rec,kl,elbo}`` (running means over the
    epoch's batches, nats per sentence) and ``val_{rec,kl,elbo,ppl,au,mi}``. Raises :class:`DivergedError`.
    With ``cfg.trace_every`` > 0, rank 0 also records a trace point (:class:`Tracer`) every that many iterations,
    returned as ``TrainResult.trace``.

    ``distributed``: ``(rank, world_size, wrap)`` for data-parallel training (e.g. under Ray Train, ``wrap`` =
    ``ray.train.torch.prepare_model``; a process group must exist). Every rank builds the same global batches
    (:func:`~trainables.text.data.shard_batches`) and trains on its rows, weighted so that the all-reduced
    gradient is the global batch's; β, K and the iteration count are those of a single process. Rank 0
    validates and tests; the validation metrics (hence the aggressive switch-off) are broadcast, the training
    sums all-reduced, so ``on_epoch`` sees the same row on every rank. Ranks other than 0 get an empty
    ``test``. Divergence is detected on the all-reduced gradient norm, so every rank raises together.
    """
    rank, world, wrap = distributed or (0, 1, None)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = TextVAE(len(data.vocab), model_cfg, data.vocab.pad, data.vocab.unk).to(device)
    net = wrap(model) if wrap is not None else model
    run = AnnealedTraining(model, cfg, len(data.train))
    history, tokens, train_seconds = [], 0.0, 0.0
    eval_kw = dict(batch_size=cfg.eval_batch_size, n_components=cfg.eval_components, mi_rows=cfg.mi_rows,
                   device=device)
    rows = min(cfg.trace_rows, len(data.val))
    tracer = Tracer(cfg.trace_every if rank == 0 else 0,
                    TextSplit(data.val.sentences[:rows], data.val.labels[:rows]), data.vocab,
                    {**eval_kw, "mi_rows": rows}, cfg.seed + 104_729)
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        net.train()
        train = shard_batches(data.train, data.vocab, cfg.batch_size, rank=rank, world=world, shuffle=True,
                              seed=cfg.seed * 100_003 + epoch, device=device)
        rec_sum, kl_sum, epoch_tokens = 0.0, 0.0, 0
        inner, beta, k = 0, 1.0, cfg.k_max
        for batch, share in train:
            beta, k = run.next_iteration()
            t = run.t
            if cfg.cyclical_lr:
                for opt in (run.opt_enc, run.opt_dec):
                    for group in opt.param_groups:
                        group["lr"] = cyclical_lr(t, run.total, cycles=cfg.cycles, lr_max=cfg.lr, lr_min=cfg.lr_min)
            if run.aggressive:
                inner += aggressive_encoder_steps(net, model, train, run.opt_enc, beta, k, cfg, rng, world)
            out = net(batch, beta, k, cfg.j_samples)
            loss = out["loss"] * (share * world)
            if world == 1 and not torch.isfinite(loss):
                raise DivergedError(f"text VAE diverged at epoch {epoch}, iteration {t} (loss {float(loss.detach())})")
            norm = run.update(model, loss)
            if world > 1 and not torch.isfinite(norm):
                raise DivergedError(f"text VAE diverged at epoch {epoch}, iteration {t} (gradient norm {float(norm)})")
            if share > 0:
                rec, kl = float(out["rec"].detach().sum()), float(out["kl"].detach().sum())
                rec_sum, kl_sum = rec_sum + rec, kl_sum + kl
                epoch_tokens += batch.n_tokens
                tracer.add(rec, kl, out["rec"].shape[0])
            if tracer.due(t):
                pause = time.perf_counter()
                tracer.point(model, t, beta, k)
                start += time.perf_counter() - pause
        rec_sum, kl_sum, epoch_tokens = all_reduce_sum([rec_sum, kl_sum, float(epoch_tokens)], world)
        tokens += epoch_tokens
        train_seconds += time.perf_counter() - start
        val = None
        if rank == 0:
            full = evaluate_vae(model, data.val, data.vocab, iw_samples=0, seed=cfg.seed + epoch, **eval_kw)
            val = {m: float(full[m]) for m in ("rec", "kl", "elbo", "ppl", "au", "mi")}
        val = _broadcast(val, rank, world)
        n = len(data.train)
        row = {"epoch": epoch, "iteration": run.t, "beta": beta, "k": k, "aggressive": run.aggressive,
               "inner_steps": inner, "train_rec": rec_sum / n, "train_kl": kl_sum / n,
               "train_elbo": -(rec_sum + kl_sum) / n, **{f"val_{m}": v for m, v in val.items()}}
        history.append(row)
        run.end_epoch(val["mi"])
        if on_epoch is not None:
            on_epoch(row)
    test = {}
    if rank == 0:
        test = evaluate_vae(model, data.test, data.vocab, iw_samples=cfg.iw_samples, seed=cfg.seed + 7919,
                            latent_samples=cfg.latent_samples, **eval_kw)
    return TrainResult(history, test, model, tokens / max(train_seconds, 1e-9), train_seconds,
                       tracer.points if tracer.every else {})


def config_dict(model_cfg: VAEModelConfig, cfg: VAETrainConfig) -> dict[str, Any]:
    """Flat dict of both configs (for logging)."""
    return {**asdict(model_cfg), **asdict(cfg)}
