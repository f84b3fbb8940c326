"""``--loss kd``: Hinton KD, CE + w T^2 KL(softmax(z_t/T) || softmax(z_s/T)) on cached logits."""

from __future__ import annotations

from kdcache.distill import losses as L
from kdcache.distill.methods.base import LOGIT_STAND, Method, Option


class KD(Method):
    name = "kd"
    summary = "Hinton KD: CE + w T^2 KL(softmax(z_t/T) || softmax(z_s/T))"
    reads = ("teacher_logits",)
    options = (
        Option("kd_weight", 1.0, "weight w of the KD term", minimum=0.0),
        Option("temperature", 1.0, "temperature T", minimum=0.0, strict=True),
        LOGIT_STAND,
    )

    def terms(self, out, batch, progress):
        ce = self.ce(out, batch)
        logits, t_logits = out["logits"].float(), batch["teacher_logits"]
        if self.opt.logit_stand:
            logits, t_logits = L.standardize_logits(logits), L.standardize_logits(t_logits)
        return {"ce": ce, "kd": self.opt.kd_weight * L.kd_loss(logits, t_logits, self.opt.temperature)}
