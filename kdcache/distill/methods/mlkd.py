"""``--loss mlkd``: multi-level KD (Jin et al., 2023) on cached logits.

CE + sum over T of instance T^2 KL + class (1/C)||P_t^T P_t - P_s^T P_s||^2 + batch
(1/B)||P_t P_t^T - P_s P_s^T||^2, P = softmax(z/T). With ``logit_stand`` the instance term reads
standardized logits and the class and batch terms the raw ones, as in the reference code of logit
standardization (its MLKD standardizes inside ``kd_loss`` only).
"""

from __future__ import annotations

from kdcache.distill import losses as L
from kdcache.distill.methods.base import LOGIT_STAND, Method, numbers_option

TEMPERATURES = numbers_option("temperatures", (1.0, 2.0, 3.0, 4.0, 5.0), "the temperatures T summed over")


class MLKD(Method):
    name = "mlkd"
    summary = "multi-level KD: CE + instance + class + batch levels, summed over temperatures"
    reads = ("teacher_logits",)
    options = (TEMPERATURES, LOGIT_STAND)

    def terms(self, out, batch, progress):
        ce = self.ce(out, batch)
        logits, t_logits = out["logits"].float(), batch["teacher_logits"]
        levels = L.multi_level_loss(logits, t_logits, self.opt.temperatures)
        instance = levels["instance"]
        if self.opt.logit_stand:
            z_s, z_t = L.standardize_logits(logits), L.standardize_logits(t_logits)
            instance = sum(L.instance_level_loss(z_s, z_t, t) for t in self.opt.temperatures)
        return {"ce": ce, "instance": instance, "class": levels["class_"], "batch": levels["batch"]}
