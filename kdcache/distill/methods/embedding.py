"""``--loss embedding``: CE + w (1 - cos(P e_s, e_t)), P learned when the dimensions differ."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from kdcache.distill import losses as L
from kdcache.distill.methods.base import Method, Option, projection


class EmbeddingKD(Method):
    name = "embedding"
    summary = "embedding KD: CE + w (1 - cos(P e_s, e_t)), P learned when dimensions differ"
    reads = ("teacher_embedding",)
    options = (Option("kd_weight", 1.0, "weight w of the embedding term", minimum=0.0),)

    def __init__(self, options=None, run=None) -> None:
        super().__init__(options, run)
        self.adapter = projection(self.run.student_dim, self.run.teacher_dim)

    def outputs(self, student: nn.Module, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = super().outputs(student, batch)
        return out | {"projected": self.adapter(out["embedding"])}

    def terms(self, out, batch, progress):
        emb = self.opt.kd_weight * L.embedding_loss(out["projected"], batch["teacher_embedding"])
        return {"ce": self.ce(out, batch), "emb": emb}
