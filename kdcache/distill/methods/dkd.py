"""``--loss dkd``: decoupled KD (NSKD / ENSKD, Truong et al., ICASSP 2024; mdistiller's ``dkd_loss``).

CE + min(progress / warm-up, 1) (alpha TCKD + beta NCKD), between the student's AAM logits and the
cached margin-free teacher logits with the teacher's AAM margin put back on the target (ENSKD). Rows of
speakers unknown to the teacher (label -1) take the teacher's top class as their target.
"""

from __future__ import annotations

import torch

from kdcache.distill import losses as L
from kdcache.distill.methods.base import LOGIT_STAND, Method, Option


class DKD(Method):
    name = "dkd"
    summary = "decoupled KD (NSKD/ENSKD): CE + ramp (alpha TCKD + beta NCKD), teacher margin on its target"
    reads = ("teacher_logits",)
    options = (
        Option("temperature", 1.0, "temperature T (ENSKD: 1, with beta 2; mdistiller: 4, with beta 8)",
               minimum=0.0, strict=True),
        Option("alpha", 1.0, "weight of TCKD", minimum=0.0),
        Option("beta", 2.0, "weight of NCKD (ENSKD: 2; mdistiller: 8)", minimum=0.0, strict=True),
        Option("kd_warmup_epochs", None, "the weight ramps linearly per step over this many epochs "
               "[default: ENSKD's 20/150 of the run; 0: full weight from the first step]", minimum=0.0),
        Option("teacher_margin", None, "AAM margin put back on the cached teacher's target logit "
               "[default: the margin the teacher was trained with, from the cache; ENSKD: 0.2]", minimum=0.0),
        LOGIT_STAND,
    )

    @property
    def warmup_epochs(self) -> float:
        """Warm-up in epochs: ENSKD's 20 of 150, scaled to the run (a 6-epoch run ramps over 0.8)."""
        if self.opt.kd_warmup_epochs is not None:
            return float(self.opt.kd_warmup_epochs)
        return 20 * self.run.epochs / 150

    @property
    def teacher_margin(self) -> float:
        margin = self.opt.teacher_margin
        return float(self.run.teacher_margin if margin is None else margin)

    def ramp(self, progress: float) -> float:
        """min(progress / warm-up, 1) at ``progress`` epochs done (fractional: per step).

        mdistiller ramps once per epoch (min(epoch / 20, 1) over 240 epochs); a run of a few epochs needs
        the same linear ramp per step, or its first epoch jumps straight to full weight."""
        if self.warmup_epochs <= 0:
            return 1.0
        return min(max(progress, 0.0) / self.warmup_epochs, 1.0)

    def terms(self, out, batch, progress):
        ce = self.ce(out, batch)
        labels, logits, t_logits = batch["label"], out["logits"].float(), batch["teacher_logits"]
        known = labels >= 0
        # the teacher's top class stands in for unknown speakers (label -1); skip the [B, S] argmax if none
        target = labels if bool(known.all()) else torch.where(known, labels, t_logits.argmax(dim=1))
        t_margin = L.apply_teacher_margin(t_logits, target, self.teacher_margin, self.run.teacher_scale)
        if self.opt.logit_stand:
            logits, t_margin = L.standardize_logits(logits), L.standardize_logits(t_margin)
        tckd, nckd = L.dkd_terms(logits, t_margin, target, self.opt.temperature)
        ramp = self.ramp(progress)
        return {"ce": ce, "tckd": ramp * self.opt.alpha * tckd, "nckd": ramp * self.opt.beta * nckd}
