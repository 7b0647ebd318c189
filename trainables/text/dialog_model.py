"""A conditional VAE for dialog response generation (kgCVAE family, Zhao et al. 2017), its training and evaluation.

Model (:class:`DialogCVAE`; every RNN a GRU, words embedded once and shared):

- *utterance encoder*: a bidirectional GRU over an utterance's words; its two final states concatenated, u [2H_u].
- *context encoder*: a GRU over the context's utterance vectors, each with its speaker feature ``same``
  (1 = the responder); its final state is c [H_c].
- *recognition network* q(z|x, c): a registered posterior (``trainables.text.posteriors.POSTERIORS``) reading
  [c, u(x)] (and the response's dialog act one-hot y with ``act_knowledge``, as kgCVAE's q(z|x, c, y)).
- *prior network* p(z|c) = N(m(c), diag s²(c)): a one-hidden-layer tanh MLP of c.
- *decoder*: a GRU whose initial state is tanh(W [c, z] (+ an embedding of y)), fed ``<s> w_1 .. w_n``
  (teacher forcing), predicting ``w_1 .. w_n </s>``.
- *bag-of-words loss* (``bow``; kgCVAE's CVAE+BoW, off: the plain CVAE of the thesis's Table 2.3): an MLP of
  [c, z] predicts every response token at once, −Σ_t log p_bow(x_t|c, z).
- *dialog-act knowledge* (``act_knowledge``, kgCVAE): an MLP predicts y from [c, z] (cross-entropy loss); the
  decoder gets the true y in training and the predicted one when generating.

Objective per response, nats (``rec`` = −log p(x|z, c) summed over the predicted tokens):
``loss = rec + β·kl [+ bow_weight·bow] [+ act_weight·act]``, β from ``trainables.text.beta_schedules.SCHEDULES``,
the bracketed terms with ``bow`` and ``act_knowledge``.

The KL term against the learned prior (:func:`kl_to_prior`). Gaussian q (one component): the analytic
``KL(N(μ, σ²) ‖ N(m, s²)) = ½ Σ_d [log s²_d/σ²_d + (σ²_d + (μ_d − m_d)²)/s²_d − 1]``. Semi-implicit q: the bound
of ``trainables.text.posteriors.kl_bound`` with p(z|c) in place of N(0, I). Its derivation: with q̃_j the mixture of
the sample's own draw ψ_j and K shared draws ψ̃_k,
``E[log q̃_j(z_j) − log p(z_j|c)] = E[log N(z_j; ψ_j) − log p(z_j|c)] − E[log N(z_j; ψ_j) − log q̃_j(z_j)]``;
the first expectation under z_j ~ N(ψ_j) is the Gaussian-to-Gaussian KL(N(ψ_j) ‖ p(·|c)) (analytic, as above),
the second is the repulsive term B_j of ``kl_bound``, which does not involve the prior. So
``kl = (1/J) Σ_j [KL(N(ψ_j) ‖ N(m(c), s²(c))) − B_j]``: an upper bound of KL(q(z|x, c) ‖ p(z|c)) in expectation
(SIVI), exact for K = 0 and tending to it as K → ∞; it can be slightly negative as a Monte-Carlo estimate.

SA-VAE (posterior ``sa``, Kim et al. 2018; :meth:`DialogCVAE.posterior_params`): the Gaussian recognition
network's (μ, log σ²) of each response are refined by ``steps`` SVI steps
(``trainables.text.semi_amortized.refine``, through the posterior's ``refine``) before the KL term and the
decoder see them. The SVI objective is the response's own loss: in training the training loss above (with the
current β, J z-samples, bow and act terms), differentiated through the steps so the recognition network learns
through them; in evaluation the negative ELBO rec + KL that the test reports, detached. Amortised posteriors
(``gaussian``, ``semi-implicit``) are used as they come. Generation draws z from p(z|c), so SVI does not touch it.

Training (:func:`train_dialog`) mirrors ``trainables.text.vae_model.train_vae`` on the same machinery
(``trainables.text.vae_training``): Adam, gradient clipping, β and the semi-implicit K annealed per iteration
(K_t = k_min + round((k_max − k_min)·β_t/β_max)); aggressive training reuses the shared encoder-step loop
(the *encoder* being the recognition network; every other weight is the generative side p(x, y, z|c)),
switched off after the first epoch whose validation I(x, z) does not
exceed the best so far.
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
from trainables.text.dialog_data import DialogBatch, DialogData, DialogSplit, Vocab, batch_indices, make_batch
from trainables.text.dialog_metrics import act_accuracy, generation_metrics
from trainables.text.posteriors import kl_bound, make_posterior
from trainables.text.vae_metrics import mutual_information, perplexity
from trainables.text.vae_training import AnnealedTrainConfig, AnnealedTraining, TrainingResult, aggressive_encoder_steps


@dataclass
class DialogModelConfig:
    """Sizes of :class:`DialogCVAE` (units per direction for ``utt_hidden``) and its loss weights.
    ``posterior_options`` maps posterior names to keyword arguments, e.g. ``{"semi-implicit": {"noise_dim": 8}}``."""

    emb_dim: int = 64
    utt_hidden: int = 64
    ctx_hidden: int = 128
    dec_hidden: int = 128
    mlp_hidden: int = 64
    latent_dim: int = 16
    act_dim: int = 16
    posterior: str = "gaussian"
    posterior_options: dict = field(default_factory=dict)
    act_knowledge: bool = True
    bow: bool = True
    bow_weight: float = 1.0
    act_weight: float = 1.0
    word_dropout: float = 0.0


def kl_to_prior(mu: torch.Tensor, logvar: torch.Tensor, p_mu: torch.Tensor, p_logvar: torch.Tensor,
                j_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The KL term against the prior N(p_mu, e^p_logvar) [B, D] and the z samples (module docstring):
    ``trainables.text.posteriors.kl_bound`` with that prior. ``mu``, ``logvar``: [B, C, D] posterior components, laid
    out as for ``kl_bound``. Returns ``(kl [B], z [J, B, D])``; with a N(0, I) prior it equals ``kl_bound``."""
    return kl_bound(mu, logvar, j_samples, prior=(p_mu, p_logvar), name="kl_to_prior")


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, n_out))


class DialogCVAE(nn.Module):
    """The CVAE of the module docstring over ``vocab`` (``<pad>`` = 0) and ``n_acts`` dialog acts."""

    def __init__(self, vocab: Vocab, n_acts: int, cfg: DialogModelConfig) -> None:
        super().__init__()
        self.cfg, self.pad, self.unk, self.bos, self.eos = cfg, vocab.pad, vocab.unk, vocab.bos, vocab.eos
        self.n_acts = n_acts
        v, e, d = len(vocab), cfg.emb_dim, cfg.latent_dim
        self.emb = nn.Embedding(v, e, padding_idx=vocab.pad)
        self.utt_enc = nn.GRU(e, cfg.utt_hidden, batch_first=True, bidirectional=True)
        self.ctx_enc = nn.GRU(2 * cfg.utt_hidden + 1, cfg.ctx_hidden, batch_first=True)
        recog_in = cfg.ctx_hidden + 2 * cfg.utt_hidden + (n_acts if cfg.act_knowledge else 0)
        self.posterior = make_posterior(cfg.posterior, recog_in, d, **cfg.posterior_options.get(cfg.posterior, {}))
        self.prior = _mlp(cfg.ctx_hidden, cfg.mlp_hidden, 2 * d)
        gen = cfg.ctx_hidden + d
        if cfg.bow:
            self.bow = _mlp(gen, cfg.mlp_hidden, v)
        if cfg.act_knowledge:
            self.act_head = _mlp(gen, cfg.mlp_hidden, n_acts)
            self.act_emb = nn.Embedding(n_acts, cfg.act_dim)
        self.init = nn.Linear(gen + (cfg.act_dim if cfg.act_knowledge else 0), cfg.dec_hidden)
        self.decoder = nn.GRU(e, cfg.dec_hidden, batch_first=True)
        self.out = nn.Linear(cfg.dec_hidden, v)

    # --- parameter groups (aggressive training) --------------------------------------------------------
    def encoder_parameters(self) -> list[nn.Parameter]:
        """The recognition network q(z|x, c)."""
        return list(self.posterior.parameters())

    def decoder_parameters(self) -> list[nn.Parameter]:
        """Everything else: the generative side p(x, y, z|c) with its encoders."""
        own = {id(p) for p in self.encoder_parameters()}
        return [p for p in self.parameters() if id(p) not in own]

    # --- encoders --------------------------------------------------------------------------------------
    def encode_utterances(self, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """u [N, 2H_u] of N utterances ``words`` [N, L] with ``lengths`` [N] >= 1."""
        packed = pack_padded_sequence(self.emb(words), lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.utt_enc(packed)  # [2, N, H_u]
        return torch.cat([h[0], h[1]], dim=-1)

    def encode(self, batch: DialogBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(c [B, H_c], u(x) [B, 2H_u])``: the context summary and the response's utterance vector."""
        b, w, length = batch.ctx.shape
        real = (torch.arange(w, device=batch.ctx.device)[None] < batch.ctx_lens[:, None]).reshape(-1)
        flat_words = batch.ctx.reshape(b * w, length)[real]
        n = flat_words.shape[0]
        r = batch.resp.shape[1]
        words = torch.zeros((n + b, max(length, r)), dtype=torch.long, device=batch.ctx.device)
        words[:n, :length], words[n:, :r] = flat_words, batch.resp
        lengths = torch.cat([batch.ctx_word_lens.reshape(-1)[real], batch.resp_lens])
        u = self.encode_utterances(words, lengths)
        slots = u.new_zeros((b * w, u.shape[1]))
        slots[real] = u[:n]
        inp = torch.cat([slots.reshape(b, w, -1), batch.same.unsqueeze(-1)], dim=-1)
        packed = pack_padded_sequence(inp, batch.ctx_lens.cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.ctx_enc(packed)
        return h[-1], u[n:]

    def components(self, c: torch.Tensor, x: torch.Tensor, act: torch.Tensor, n: int = 1):
        """Recognition components (mu [B, C, D], logvar [B, C, D]) of q(z|x, c[, y])."""
        h = torch.cat([c, x, nn.functional.one_hot(act, self.n_acts).to(c.dtype)] if self.cfg.act_knowledge
                      else [c, x], dim=-1)
        return self.posterior.components(h, n)

    def prior_params(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(m [B, D], log s² [B, D]) of p(z|c)."""
        return self.prior(c).chunk(2, dim=-1)

    def posterior_params(self, c: torch.Tensor, x: torch.Tensor, batch: DialogBatch, n: int,
                         prior: tuple[torch.Tensor, torch.Tensor], beta: float = 1.0,
                         j_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The components (mu [B, C, D], logvar [B, C, D]) the model uses for ``batch``: :meth:`components`, refined
        by a refining posterior (``sa``, SA-VAE: SVI steps on each response's own objective, module docstring).
        In training the objective is the training loss per response (:meth:`objective` with β and J =
        ``j_samples``) and the steps stay differentiable; in evaluation it is the negative ELBO rec + KL (β = 1,
        one z-sample, no auxiliary terms) and the result is detached. ``prior``: (m, log s²) of p(z|c)."""
        mu, logvar = self.components(c, x, batch.act, n)

        def neg_elbo(m: torch.Tensor, lv: torch.Tensor) -> torch.Tensor:
            kl, z = kl_to_prior(m, lv, *prior, j_samples if self.training else 1)
            terms = self.decode_terms(c, z, batch)
            return (self.objective(terms, kl, beta) if self.training else terms["rec"] + kl).sum()

        return self.posterior.refine(mu, logvar, neg_elbo, create_graph=self.training)

    # --- decoder -----------------------------------------------------------------------------------------
    def _init_state(self, gen: torch.Tensor, act: torch.Tensor | None) -> torch.Tensor:
        if self.cfg.act_knowledge:
            gen = torch.cat([gen, self.act_emb(act)], dim=-1)
        return torch.tanh(self.init(gen)).unsqueeze(0)

    def decode_terms(self, c: torch.Tensor, z: torch.Tensor, batch: DialogBatch) -> dict[str, torch.Tensor]:
        """``rec`` [B] (and ``bow`` with ``bow``, ``act`` with ``act_knowledge``), nats averaged over the S samples
        z [S, B, D], with teacher forcing."""
        s, b, _ = z.shape
        gen = torch.cat([c.expand(s, -1, -1), z], dim=-1).reshape(s * b, -1)
        act = batch.act.repeat(s)
        target, mask = batch.target.repeat(s, 1), batch.mask.repeat(s, 1)
        tokens = batch.dec_in.repeat(s, 1)
        if self.training and self.cfg.word_dropout > 0:
            drop = torch.rand(tokens.shape, device=tokens.device) < self.cfg.word_dropout
            drop[:, 0] = False
            tokens = tokens.masked_fill(drop & (tokens != self.pad), self.unk)
        out, _ = self.decoder(self.emb(tokens), self._init_state(gen, act))
        ce = nn.functional.cross_entropy
        terms = {"rec": (ce(self.out(out).transpose(1, 2), target, reduction="none") * mask).sum(-1)}
        if self.cfg.bow:
            bow_logp = self.bow(gen).log_softmax(-1)  # [S·B, V]
            terms["bow"] = -(bow_logp.gather(1, target) * mask).sum(-1)
        if self.cfg.act_knowledge:
            terms["act"] = ce(self.act_head(gen), act, reduction="none")
        return {k: v.reshape(s, b).mean(0) for k, v in terms.items()}

    def forward(self, batch: DialogBatch, beta: float, k: int = 0, j_samples: int = 1) -> dict[str, torch.Tensor]:
        """``{"loss": mean(rec + β kl [+ bow_weight bow] [+ act_weight act]), "rec", "kl"[, "bow"][, "act"]: [B]}``;
        J = ``j_samples`` z-samples per response, K = ``k`` shared mixing draws (semi-implicit only)."""
        c, x = self.encode(batch)
        prior = self.prior_params(c)
        mu, logvar = self.posterior_params(c, x, batch, k + j_samples, prior, beta, j_samples)
        kl, z = kl_to_prior(mu, logvar, *prior, j_samples)
        terms = self.decode_terms(c, z, batch)
        return {"loss": self.objective(terms, kl, beta).mean(), "kl": kl, **terms}

    def objective(self, terms: dict[str, torch.Tensor], kl: torch.Tensor, beta: float) -> torch.Tensor:
        """The training loss per response [B], nats: ``rec + β kl [+ bow_weight bow] [+ act_weight act]`` from
        :meth:`decode_terms`'s ``terms`` and the KL term ``kl`` [B]."""
        loss = terms["rec"] + beta * kl
        if self.cfg.bow:
            loss = loss + self.cfg.bow_weight * terms["bow"]
        if self.cfg.act_knowledge:
            loss = loss + self.cfg.act_weight * terms["act"]
        return loss

    @torch.no_grad()
    def generate(self, batch: DialogBatch, n: int, max_len: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Greedy decoding from n draws z ~ p(z|c): tokens [n, B, <= max_len + 1] (at most ``max_len`` words, then
        ``</s>``, then ``<pad>``) and the predicted acts [n, B] (None without ``act_knowledge``)."""
        c, _ = self.encode(batch)
        m, logvar = self.prior_params(c)
        b = c.shape[0]
        z = m + torch.randn((n, *m.shape), device=m.device) * (0.5 * logvar).exp()
        gen = torch.cat([c.expand(n, -1, -1), z], dim=-1).reshape(n * b, -1)
        acts = self.act_head(gen).argmax(-1) if self.cfg.act_knowledge else None
        h = self._init_state(gen, acts)
        token = torch.full((n * b, 1), self.bos, dtype=torch.long, device=c.device)
        done = torch.zeros(n * b, dtype=torch.bool, device=c.device)
        steps = []
        for step in range(max_len + 1):
            out, h = self.decoder(self.emb(token), h)
            nxt = self.out(out[:, -1]).argmax(-1)
            if step == max_len:  # a response still open after max_len words ends here
                nxt = torch.full_like(nxt, self.eos)
            nxt = nxt.masked_fill(done, self.pad)
            steps.append(nxt)
            done |= nxt == self.eos
            token = nxt.unsqueeze(1)
            if bool(done.all()):
                break
        tokens = torch.stack(steps, 1).reshape(n, b, -1)
        return tokens, None if acts is None else acts.reshape(n, b)


@dataclass
class DialogTrainConfig(AnnealedTrainConfig):
    """Optimisation and evaluation settings: those of :class:`trainables.text.vae_training.AnnealedTrainConfig` (lr in
    Adam units; schedule arguments as in ``trainables.text.beta_schedules.make_schedule``), at most 10 aggressive
    encoder steps, and ``samples`` = N responses generated per test context, ``gen_max_len`` their longest
    length in words."""

    aggressive_max_steps: int = 10
    samples: int = 5
    gen_max_len: int = 30


@dataclass
class DialogResult(TrainingResult):
    """Per-epoch history, final test metrics (with ``examples``), the trained :class:`DialogCVAE` and the
    training seconds."""

    train_seconds: float


@torch.no_grad()
def evaluate_dialog(model: DialogCVAE, split: DialogSplit, vocab: Vocab, *, batch_size: int = 128,
                    n_components: int = 20, mi_rows: int = 500, samples: int = 0, gen_max_len: int = 30,
                    vectors: np.ndarray | None = None, seed: int = 0, examples: int = 3,
                    device: str | torch.device = "cpu") -> dict[str, Any]:
    """Metrics of ``model`` on ``split`` (definitions: ``trainables.text.dialog_metrics``), nats per response:
    ``rec``, ``kl`` (semi-implicit: the bound with ``n_components − 1`` shared draws), ``elbo = −(rec + kl)``,
    ``rec_ppl``, ``ppl``, ``mi`` (I(x, z) under q over the first ``mi_rows`` pairs, leave-one-out for SI). With
    ``samples`` = N > 0 also N greedy responses per context from z ~ p(z|c) and their metrics
    (``trainables.text.dialog_metrics.generation_metrics``: BLEU-1..4 precision/recall/F1, the BOW embedding
    scores' precision/recall, which need ``vectors`` [V, d] over ``vocab``, intra/inter-distinct-1/2, response
    length in words), ``act_acc`` (with act knowledge; over all N·contexts predictions) and ``examples`` (the
    first ``examples`` pairs: context, reference, samples). Runs under its own seeded RNG; the caller's RNG state
    is restored."""
    was_training = model.training
    model.eval()
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    sums = {"rec": 0.0, "kl": 0.0}
    mi_parts: dict[str, list] = {"z": [], "mu": [], "logvar": []}
    hyps, refs, acts_pred, acts_true, shown = [], [], [], [], []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for idx in batch_indices(len(split), batch_size, shuffle=False):
            batch = make_batch(split, idx, vocab, device)
            c, x = model.encode(batch)
            prior = model.prior_params(c)
            mu, logvar = model.posterior_params(c, x, batch, n_components, prior)
            kl, z = kl_to_prior(mu, logvar, *prior)
            sums["rec"] += float(model.decode_terms(c, z, batch)["rec"].sum())
            sums["kl"] += float(kl.sum())
            take = min(mi_rows - sum(len(t) for t in mi_parts["z"]), len(idx))
            for key, val in (("z", z[0]), ("mu", mu), ("logvar", logvar)):
                if take > 0:
                    mi_parts[key].append(val[:take].double().cpu())
            if samples:
                tokens, acts = model.generate(batch, samples, gen_max_len)
                for i, pair in enumerate(idx):
                    hyps.append([vocab.decode(tokens[s, i].tolist()) for s in range(samples)])
                    refs.append([split.words[int(split.pairs[pair][1])]])
                if acts is not None:
                    acts_pred.append(acts.reshape(-1).cpu())
                    acts_true.append(batch.act.repeat(samples).cpu())
    model.train(was_training)
    n, words = len(split), split.n_words
    out: dict[str, Any] = {"rec": sums["rec"] / n, "kl": sums["kl"] / n, "elbo": -(sums["rec"] + sums["kl"]) / n,
                           "rec_ppl": perplexity(sums["rec"], words),
                           "ppl": perplexity(sums["rec"] + sums["kl"], words),
                           "mi": mutual_information(*(torch.cat(mi_parts[k]) for k in ("z", "mu", "logvar")))}
    if samples:
        if vectors is None:
            raise ValueError("evaluate_dialog: generation metrics need word vectors (vectors=None)")
        out.update(generation_metrics(hyps, refs, vectors, vocab.stoi))
        if acts_pred:
            out["act_acc"] = act_accuracy(torch.cat(acts_pred).numpy(), torch.cat(acts_true).numpy())
        for i in range(min(examples, n)):
            context, _ = split.context(i)
            shown.append({"context": [" ".join(vocab.decode(u)) for u in context],
                          "reference": " ".join(refs[i][0]), "samples": [" ".join(h) for h in hyps[i]]})
        out["examples"] = shown
    return out


def train_dialog(data: DialogData, model_cfg: DialogModelConfig, cfg: DialogTrainConfig, *,
                 vectors: np.ndarray | None = None, device: str | torch.device = "cpu",
                 on_epoch: Callable[[dict[str, Any]], None] | None = None) -> DialogResult:
    """Train a :class:`DialogCVAE` on ``data.train``, validate every epoch on ``data.val``, test at the end
    (generation metrics when ``cfg.samples`` > 0, with ``vectors`` for the embedding scores).

    ``on_epoch(row)`` gets ``epoch``, ``iteration``, ``beta``, ``k``, ``aggressive``, ``inner_steps``,
    ``train_{rec,kl}``, ``train_bow`` (with ``bow``) and ``train_act`` (with ``act_knowledge``) (means over the
    epoch's responses, nats) and ``val_{rec,kl,elbo,rec_ppl,mi}``. Raises :class:`DivergedError` on a non-finite
    loss."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = DialogCVAE(data.vocab, len(data.acts), model_cfg).to(device)
    run = AnnealedTraining(model, cfg, len(data.train))
    history, train_seconds = [], 0.0
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        model.train()
        order = batch_indices(len(data.train), cfg.batch_size, shuffle=True, seed=cfg.seed * 100_003 + epoch)
        train = [(make_batch(data.train, idx, data.vocab, device), 1.0) for idx in order]
        sums = {"rec": 0.0, "kl": 0.0, "bow": 0.0, "act": 0.0}
        inner, beta, k = 0, 1.0, cfg.k_max
        for batch, _ in train:
            beta, k = run.next_iteration()
            if run.aggressive:
                inner += aggressive_encoder_steps(model, model, train, run.opt_enc, beta, k, cfg, rng, 1)
            out = model(batch, beta, k, cfg.j_samples)
            if not torch.isfinite(out["loss"]):
                raise DivergedError(f"dialog CVAE diverged at epoch {epoch}, iteration {run.t} "
                                    f"(loss {float(out['loss'].detach())})")
            run.update(model, out["loss"])
            for key in sums:
                if key in out:
                    sums[key] += float(out[key].detach().sum())
        train_seconds += time.perf_counter() - start
        val = evaluate_dialog(model, data.val, data.vocab, batch_size=cfg.eval_batch_size,
                              n_components=cfg.eval_components, mi_rows=cfg.mi_rows, seed=cfg.seed + epoch,
                              device=device)
        n = len(data.train)
        row = {"epoch": epoch, "iteration": run.t, "beta": beta, "k": k, "aggressive": run.aggressive,
               "inner_steps": inner,
               **{f"train_{key}": v / n for key, v in sums.items()
                  if {"act": model_cfg.act_knowledge, "bow": model_cfg.bow}.get(key, True)},
               **{f"val_{m}": float(val[m]) for m in ("rec", "kl", "elbo", "rec_ppl", "mi")}}
        history.append(row)
        run.end_epoch(val["mi"])
        if on_epoch is not None:
            on_epoch(row)
    test = evaluate_dialog(model, data.test, data.vocab, batch_size=cfg.eval_batch_size,
                           n_components=cfg.eval_components, mi_rows=cfg.mi_rows, samples=cfg.samples,
                           gen_max_len=cfg.gen_max_len, vectors=vectors, seed=cfg.seed + 7919, device=device)
    return DialogResult(history, test, model, train_seconds)


def config_dict(model_cfg: DialogModelConfig, cfg: DialogTrainConfig) -> dict[str, Any]:
    """Flat dict of both configs (for logging)."""
    return {**asdict(model_cfg), **asdict(cfg)}
