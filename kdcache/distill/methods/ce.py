"""``--loss ce``: AAM-softmax cross-entropy alone (no KD; the teacher is not read)."""

from kdcache.distill.methods.base import Method


class CE(Method):
    name = "ce"
    summary = "no KD: AAM-softmax CE (s = 32, margin ramped 0 -> --margin)"
