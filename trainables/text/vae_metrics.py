"""Text-VAE evaluation: ELBO, reconstruction, KL, perplexities, active units, mutual information, latent probes.

Units and signs: ``rec`` = −log p(x|z) and ``kl`` are nats per sentence (positive), ``elbo`` = −(rec + kl)
nats per sentence (a lower bound on log p(x); higher is better). ``ppl = exp(Σ(rec + kl) / words)`` and
``iw_ppl = exp(Σ iw_nll / words)`` where ``words`` counts every predicted token, i.e. the words plus one
``<eos>`` per sentence. For the semi-implicit posterior ``kl`` is the bound used in training
(``trainables.text.posteriors.kl_bound``) with one z-sample and ``n_components − 1`` mixing draws.

Refining posteriors (``sa``, SA-VAE): every metric here is of the *refined* q: ``model.components`` first runs the
posterior's SVI steps on each sentence's ELBO (decoder fixed), as Kim et al. (2018) report SA-VAE, so ``kl``,
``rec``, ``elbo``, the perplexities, AU and MI all describe the refined Gaussians (IW-NLL uses them as the
proposal, still an upper bound on −log p(x) in expectation).

Estimators (z_i ~ q(z|x_i), one draw per sentence, from the sentence's first posterior component):

- IW-NLL (Burda et al.): ``−log (1/S) Σ_s p(x, z_s) / q(z_s|x)``, z_s ~ q(z|x). For the semi-implicit posterior
  q(z_s|x) is replaced by the equal-weight mixture of all drawn components (the one z_s came from included),
  which keeps the estimate a stochastic upper bound on −log p(x) in expectation (Sobolev & Vetrov 2019).
- Active units: dimension d is active if ``Var_x(E_q[z_d|x]) > 0.01`` over the evaluated sentences (for SI the
  posterior mean is the average of the drawn components' means).
- Mutual information I(x, z) under the empirical data distribution (the estimator of Hoffman & Johnson 2016
  and He et al. 2019): ``(1/N) Σ_i [log q(z_i|x_i) − log (1/N) Σ_j q(z_i|x_j)]`` over N sentences; it lies in
  [0, log N] for a Gaussian. For SI every q(z_i|x_j) is the mixture of x_j's drawn components *except the
  first*, the one each z_i was drawn from (leave-one-out): a mixture that contains the component z_i came from
  overestimates q(z_i|x_i) — the more, the narrower the components are against their spread — which biases MI
  upwards; without it every q(z_i|x_j) is an unbiased Monte-Carlo estimate of the semi-implicit density. Its
  log is biased low (Jensen), so the reported ``mi`` errs low and ``mi_upper``, the estimate that counts the own
  component, errs high: in expectation they bracket I(x, z) (up to the aggregate term's 1/N share) and meet
  as the number of components grows. E.g. x without information (true MI 0), 1-D, mixing means N(0, 1),
  σ = 0.3, 400 rows: 20 components give −0.25 / +0.15 nats, 50 give −0.17 / +0.04 (tests/test_text_vae.py).
  For a Gaussian the two are equal.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from trainables.text.data import TextSplit, Vocab, batches, length_bucketed_batches, make_batch
from trainables.text.posteriors import diag_normal_log_prob, kl_bound, mixture_log_prob, sample_components

AU_THRESHOLD = 0.01


def perplexity(nll_nats: float, n_words: int) -> float:
    """exp(total NLL in nats / number of predicted tokens); ``inf`` past float range (a model that diverged
    without a NaN loss reports ``inf`` rather than crashing its trial with OverflowError)."""
    per_word = nll_nats / n_words
    return math.inf if per_word >= 709.0 else math.exp(per_word)  # NaN stays NaN


def log_mean_exp(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])


def iw_nll(log_joint: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Importance-weighted NLL [B] from log p(x, z_s) and log q(z_s|x), both [S, B] (nats)."""
    return -log_mean_exp(log_joint - log_q, dim=0)


def active_units(means: torch.Tensor | np.ndarray, threshold: float = AU_THRESHOLD) -> int:
    """Number of latent dims whose posterior mean varies across the data: Var_x(means[:, d]) > threshold.
    ``means``: [N, D] posterior means E_q[z|x] (population variance, ddof 0)."""
    m = torch.as_tensor(means, dtype=torch.float64)
    return int((m.var(dim=0, unbiased=False) > threshold).sum())


def mutual_information(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, chunk: int = 256,
                       leave_one_out: bool = True) -> float:
    """I(x, z) estimate in nats (module docstring).

    Args: ``z`` [N, D] with z_i ~ q(z|x_i) drawn from component 0 of row i; ``mu`` and ``logvar`` [N, C, D] the
    posterior components of every x_j (C = 1 for a Gaussian). ``leave_one_out`` (with C > 1): q(z_i|x_j) is
    the mixture of components 1..C−1 of x_j, leaving out component 0 (the one z_i came from); False keeps
    all C (the biased estimator, for measuring that bias)."""
    if leave_one_out and mu.shape[1] > 1:
        mu, logvar = mu[:, 1:], logvar[:, 1:]
    n = z.shape[0]
    own = mixture_log_prob(z.unsqueeze(0), mu, logvar)[0]  # [N]: log q(z_i|x_i)
    agg = []
    for start in range(0, n, chunk):
        zi = z[start:start + chunk]  # [c, D] -> log q(z_i|x_j) for all j: [c, N]
        agg.append(mixture_log_prob(zi.unsqueeze(1).expand(-1, n, -1), mu, logvar))
    log_qz = log_mean_exp(torch.cat(agg, 0), dim=1)
    return float((own - log_qz).mean())


def knn_accuracy(z: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out 1-nearest-neighbour (Euclidean) accuracy of predicting ``labels`` [N] from ``z`` [N, D]."""
    z = np.asarray(z, dtype=np.float64)
    d = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float((labels[d.argmin(1)] == labels).mean())


def labelled_subset(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Indices of a stratified, seeded ``fraction`` of ``labels`` [N] (at least one per class; every index when
    the subset would leave out fewer than one per class): the labelled sentences of both label probes."""
    from sklearn.model_selection import train_test_split

    n, n_classes = len(labels), len(np.unique(labels))
    keep = max(round(fraction * n), n_classes)
    if keep > n - n_classes:
        return np.arange(n)
    return train_test_split(np.arange(n), train_size=keep, stratify=labels, random_state=seed)[0]


def downstream_accuracy(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray,
                        fractions: Sequence[float] = (0.01, 0.1, 1.0), seed: int = 0) -> dict[str, float]:
    """The ``logistic`` label probe: test accuracy of a one-layer (logistic-regression) classifier on the frozen
    z [N, D] fitted with the :func:`labelled_subset` of each ``fraction`` of the training labels; keys
    ``acc_<percent>pct`` (e.g. ``acc_1pct``)."""
    from sklearn.linear_model import LogisticRegression

    out = {}
    for frac in fractions:
        keep = labelled_subset(y_train, frac, seed)
        clf = LogisticRegression(max_iter=2000).fit(z_train[keep], y_train[keep])
        out[f"acc_{frac * 100:g}pct"] = float(clf.score(z_test, y_test))
    return out


def finetune_accuracy(model, train: TextSplit, val: TextSplit, test: TextSplit, vocab: Vocab, *,
                      fractions: Sequence[float] = (0.01, 0.1, 1.0), steps: int = 300, lr: float = 1e-3,
                      batch_size: int = 32, n_components: int = 20, seed: int = 0,
                      device: str | torch.device = "cpu") -> dict[str, float]:
    """The ``finetune`` label probe (the thesis's eq. 2.19): test accuracy of a one-layer classifier
    ``softmax(W z̄(x) + b)`` trained together with the encoder; keys ``acc_<percent>pct`` as
    :func:`downstream_accuracy`.

    Per fraction, a copy of ``model`` (a ``TextVAE``; the model itself is not changed) and a new linear layer are
    trained with cross-entropy for ``steps`` Adam updates (``lr``) on batches of ``batch_size`` sentences of
    the fraction's :func:`labelled_subset`, every weight of the encoder side (embeddings, LSTM, posterior) free.
    z̄(x) is the posterior mean, the mean of ``n_components`` drawn components' means (a Gaussian's μ; for
    ``sa`` the amortised μ: the SVI refinement needs the decoder and no label). Every ``steps // 10`` updates
    (and after the last) the classifier is scored on ``val``; the reported accuracy is the test accuracy at
    the best validation accuracy (Fu et al. 2019 select their classifier so). Runs under its own seeded RNG.
    """
    classes = np.unique(train.labels)
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    out = {}
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for frac in fractions:
            keep = labelled_subset(train.labels, frac, seed)
            subset = TextSplit([train.sentences[i] for i in keep], np.searchsorted(classes, train.labels[keep]))
            out[f"acc_{frac * 100:g}pct"] = _finetuned_test_accuracy(
                model, subset, val, test, vocab, classes, steps=steps, lr=lr, batch_size=batch_size,
                n_components=n_components, seed=seed, device=device)
    return out


def _finetuned_test_accuracy(model, subset: TextSplit, val: TextSplit, test: TextSplit, vocab: Vocab,
                             classes: np.ndarray, *, steps: int, lr: float, batch_size: int, n_components: int,
                             seed: int, device) -> float:
    """One fraction of :func:`finetune_accuracy`: ``subset`` holds its sentences with class indices as labels."""
    import copy

    encoder = copy.deepcopy(model).train()
    head = torch.nn.Linear(model.cfg.latent_dim, len(classes)).to(device)
    opt = torch.optim.Adam([*encoder.encoder_parameters(), *head.parameters()], lr=lr)

    def logits(batch) -> torch.Tensor:
        mu, _ = encoder.posterior.components(encoder.encode(batch.src, batch.lengths), n_components)
        return head(mu.mean(1))

    @torch.no_grad()
    def accuracy(split: TextSplit) -> float:
        right = 0
        for idx in _eval_order(split, 128):
            batch = make_batch([split.sentences[i] for i in idx], vocab, device)
            right += int((classes[logits(batch).argmax(-1).cpu().numpy()] == split.labels[idx]).sum())
        return right / len(split)

    labels = torch.as_tensor(subset.labels, dtype=torch.long, device=device)
    lengths = [len(s) for s in subset.sentences]
    queue: list[np.ndarray] = []
    best_val, best_test, every = -1.0, math.nan, max(1, steps // 10)
    for step in range(1, steps + 1):
        if not queue:  # a new seeded pass over the labelled sentences
            queue = length_bucketed_batches(lengths, batch_size, shuffle=True, seed=seed * 7_919 + step)
        idx = queue.pop(0)
        batch = make_batch([subset.sentences[i] for i in idx], vocab, device)
        loss = torch.nn.functional.cross_entropy(logits(batch), labels[torch.as_tensor(idx, device=device)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % every == 0 or step == steps:
            val_acc = accuracy(val)
            if val_acc > best_val:
                best_val, best_test = val_acc, accuracy(test)
    return best_test


@torch.no_grad()
def evaluate_vae(model, split: TextSplit, vocab: Vocab, *, batch_size: int = 128, iw_samples: int = 0,
                 n_components: int = 20, mi_rows: int = 500, seed: int = 0, latent_samples: int = 0,
                 device: str | torch.device = "cpu") -> dict:
    """Metrics of ``model`` (a ``trainables.text.vae_model.TextVAE``) on ``split`` (module docstring for definitions).

    ``n_components``: posterior components drawn per sentence (SI; a Gaussian always has 1);
    ``iw_samples`` = S (0 skips IW: ``iw_nll``/``iw_ppl`` NaN); MI uses the first ``mi_rows`` sentences in
    evaluation order. Returns floats ``rec, kl, elbo, ppl, iw_nll, iw_ppl, mi, mi_upper`` and int ``au``, plus arrays
    ``means`` [N, D] (posterior means in split order), ``labels`` [N] and, if ``latent_samples`` > 0,
    ``samples`` [N, latent_samples, D]. Runs under its own seeded RNG; the caller's RNG state is restored.
    """
    was_training = model.training
    model.eval()
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        order = [i for b in _eval_order(split, batch_size) for i in b]
        sums = {"rec": 0.0, "kl": 0.0, "iw": 0.0}
        means, samples, mi_parts = [], [], {"z": [], "mu": [], "logvar": []}
        mi_left = mi_rows
        for batch in batches(split, vocab, batch_size, shuffle=False, device=device):
            mu, logvar = model.components(batch, n_components + max(iw_samples, 1) - 1)
            kl, z = kl_bound(mu[:, :n_components], logvar[:, :n_components])
            sums["rec"] += float(model.reconstruction(z, batch).sum())
            sums["kl"] += float(kl.sum())
            means.append(mu.mean(1).cpu())
            if latent_samples:
                idx = torch.randint(mu.shape[1], (latent_samples,))
                eps = torch.randn(mu.shape[0], latent_samples, mu.shape[2], device=mu.device)
                samples.append((mu[:, idx] + eps * (0.5 * logvar[:, idx]).exp()).cpu())
            if iw_samples:
                sums["iw"] += float(_iw_nll_batch(model, batch, mu, logvar, iw_samples).sum())
            if mi_left > 0:
                take = min(mi_left, mu.shape[0])
                for key, val in (("z", z[0]), ("mu", mu[:, :n_components]), ("logvar", logvar[:, :n_components])):
                    mi_parts[key].append(val[:take].cpu())
                mi_left -= take
    model.train(was_training)
    n, words = len(split), split.n_words
    inv = np.argsort(np.asarray(order))  # batches() visits sentences in `order`; undo it
    mi_args = [torch.cat(mi_parts[k]).double() for k in ("z", "mu", "logvar")]
    means_arr = torch.cat(means).double().numpy()[inv]
    out = {
        "rec": sums["rec"] / n, "kl": sums["kl"] / n, "elbo": -(sums["rec"] + sums["kl"]) / n,
        "ppl": perplexity(sums["rec"] + sums["kl"], words),
        "iw_nll": sums["iw"] / n if iw_samples else math.nan,
        "iw_ppl": perplexity(sums["iw"], words) if iw_samples else math.nan,
        "au": active_units(means_arr),
        "mi": mutual_information(*mi_args),
        "mi_upper": mutual_information(*mi_args, leave_one_out=False),
        "means": means_arr, "labels": split.labels,
    }
    if latent_samples:
        out["samples"] = torch.cat(samples).numpy()[inv]
    return out


def _eval_order(split: TextSplit, batch_size: int) -> list[np.ndarray]:
    return length_bucketed_batches([len(s) for s in split.sentences], batch_size, shuffle=False)


def _iw_nll_batch(model, batch, mu: torch.Tensor, logvar: torch.Tensor, s: int, chunk: int = 10) -> torch.Tensor:
    """IW-NLL [B] with ``s`` samples; sample i comes from component ``i mod C`` of ``mu``, ``logvar`` [B, C, D]."""
    c = mu.shape[1]
    log_w = []
    for start in range(0, s, chunk):
        idx = torch.arange(start, min(s, start + chunk)) % c
        z = sample_components(mu[:, idx], logvar[:, idx])  # [s', B, D]
        log_prior = diag_normal_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))
        log_joint = -model.reconstruction(z, batch) + log_prior
        log_w.append(log_joint - mixture_log_prob(z, mu, logvar))
    return -log_mean_exp(torch.cat(log_w, 0), dim=0)
