"""``--loss imlkd``: IML-KD (Yang et al., 2024) on integrated inputs built from the cached IG maps.

CE on the crop + eta (instance [KL + w ||P e_s - e_t||^2 on unit vectors] + class + batch), the KD
terms between the student on the integrated input and the teacher's cached outputs on the same input
(``kdcache.distill.integrated``; the cache must be built with ``--saliency``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from kdcache.distill import losses as L
from kdcache.distill.integrated import cached_mode, integrated_inputs
from kdcache.distill.methods.base import Method, Option, projection
from kdcache.distill.methods.mlkd import TEMPERATURES


class IMLKD(Method):
    name = "imlkd"
    summary = "IML-KD: CE + eta (instance + w embedding + class + batch) on integrated inputs (--saliency caches)"
    reads = ("saliency", "integrated_logits", "integrated_embedding")
    options = (
        TEMPERATURES,
        Option("eta", 1.0, "weight of the KD terms", minimum=0.0, strict=True),
        Option("embedding_weight", 1.0, "weight w of ||P e_s - e_t||^2", minimum=0.0),
    )

    def __init__(self, options=None, run=None) -> None:
        super().__init__(options, run)
        self.adapter = projection(self.run.student_dim, self.run.teacher_dim)
        self.mode = cached_mode(self.run.teacher)

    def outputs(self, student: nn.Module, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = super().outputs(student, batch)
        i_emb = student(integrated_inputs(batch["feats"], batch["saliency"], self.mode))
        return out | {"integrated_logits": student.projection.cosine_logits(i_emb),
                      "integrated_projected": self.adapter(i_emb)}

    def terms(self, out, batch, progress):
        ce = self.ce(out, batch)
        eta = self.opt.eta
        levels = L.multi_level_loss(out["integrated_logits"].float(), batch["integrated_logits"], self.opt.temperatures)
        # Distance between unit-length embeddings: speaker embeddings are compared by cosine, and raw
        # norms (teacher and student differ by orders of magnitude) made the squared distance explode.
        dist = L.embedding_distance(
            F.normalize(out["integrated_projected"].float(), dim=1), F.normalize(batch["integrated_embedding"], dim=1)
        )
        return {"ce": ce, "instance": eta * (levels["instance"] + self.opt.embedding_weight * dist),
                "class": eta * levels["class_"], "batch": eta * levels["batch"]}
