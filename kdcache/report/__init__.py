"""Reports over finished runs: tables with confidence intervals over seeds, DET curves, training curves,
saliency pictures (``kdcache report``). Sits above ``train``: it reads what training and evaluation wrote."""
